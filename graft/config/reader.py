"""Reading the YAML of the config file: a loader that refuses duplicate keys, YAML errors as
one line, and the base of the section readers (every error names the file and the key path)."""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import yaml

from graft.config import ConfigError

# A DNS name or an IPv4 address (letters, digits, hyphens, underscores, dots).
_HOST = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252}[A-Za-z0-9_.])?$")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def load_document(path: str | Path) -> tuple[str, Any]:
    """The file's label (the path as given) and its parsed YAML; ConfigError if it cannot be
    read or is not YAML."""
    label = str(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{label}: config file not found; pass an existing YAML file with -c/--config"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{label}: is a directory; expected a YAML config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{label}: cannot read the config file ({e}); check the file") from None
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"{label}: line {e.line}: {e.message}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{label}: {_describe_yaml_error(e)}") from None
    return label, document


class _DuplicateKey(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (YAML keeps the last one,
    which would silently drop a peer)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # let the base class report an unhashable key
            if key in seen:
                raise _DuplicateKey(
                    f"duplicate key {json.dumps(key, default=str)}; expected each key once "
                    "in a mapping",
                    key_node.start_mark.line + 1,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe_yaml_error(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
    hint = "fix the YAML syntax there"
    if "'{'" in problem:
        # `cert: certs/{id}.pem` inside a {...} mapping is the usual culprit.
        hint += ' (inside {...}, quote values that contain braces: "certs/{id}.pem")'
    return f"YAML syntax error at {where}: {problem}; {hint}"


def valid_host(host: str) -> bool:
    if ":" in host:  # only an IPv6 address may hold colons (a port belongs in ports)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _HOST.match(host) is not None


def show(value: Any) -> str:
    """A value as the operator wrote it, short enough for one line."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


# What a YAML value is, in words; bool before int, since a bool is an int.
_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "a mapping"),
)


def kind(value: Any) -> str:
    if value is None:
        return "null"
    for python_type, words in _KINDS:
        if isinstance(value, python_type):
            return words
    return f"a {type(value).__name__}"


def join(key: str, sub: Any) -> str:
    return f"{key}.{sub}" if key else str(sub)


class Reader:
    """Walks the parsed YAML; every error names the file and the key path."""

    def __init__(self, label: str, path: Path) -> None:
        self.label = label
        self.path = path

    def fail(self, key: str, problem: str) -> ConfigError:
        where = f"{self.label}: {key}: " if key else f"{self.label}: "
        return ConfigError(where + problem)

    def wrong_type(self, key: str, value: Any, expected: str) -> ConfigError:
        return self.fail(key, f"{show(value)} is {kind(value)}; expected {expected}")

    def mapping(
        self, key: str, value: Any, allowed: tuple[str, ...], expected: str
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.wrong_type(key, value, expected)
        for sub in value:
            if not isinstance(sub, str):
                raise self.fail(
                    join(key, sub), f"key {show(sub)} is {kind(sub)}; expected a string key"
                )
            if sub not in allowed:
                raise self.unknown_key(key, sub, allowed)
        return value

    def unknown_key(self, key: str, sub: str, allowed: tuple[str, ...]) -> ConfigError:
        close = difflib.get_close_matches(sub, allowed, n=1, cutoff=0.6)
        if close:
            return self.fail(join(key, sub), f"unknown key; did you mean {join(key, close[0])}?")
        return self.fail(join(key, sub), f"unknown key; expected one of: {', '.join(allowed)}")

    def integer(
        self, key: str, value: Any, *, minimum: int, maximum: int | None = None, noun: str = ""
    ) -> int:
        if maximum is None:
            expected = f"an integer >= {minimum}" if minimum != 1 else "a positive integer"
        else:
            expected = f"an integer {noun}{' ' if noun else ''}in {minimum}..{maximum}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong_type(key, value, expected)
        if value < minimum or (maximum is not None and value > maximum):
            positive = minimum == 1 and maximum is None
            problem = "is not positive" if positive else "is out of range"
            raise self.fail(key, f"{value} {problem}; expected {expected}")
        return value

    def string(self, key: str, value: Any, expected: str) -> str:
        if not isinstance(value, str):
            raise self.wrong_type(key, value, expected)
        if not value.strip():
            raise self.fail(key, f"{show(value)} is empty; expected {expected}")
        return value

    def path_template(self, key: str, value: Any, example: str) -> str:
        template = self.string(key, value, f'a path string such as "{example}"')
        for placeholder in _PLACEHOLDER.findall(template):
            if placeholder != "{id}":
                raise self.fail(
                    key,
                    f"{show(template)} uses the unknown placeholder {placeholder}; "
                    "expected only {id} (the node id)",
                )
        return template
