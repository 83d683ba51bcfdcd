"""--param/-p and --param-json of `graft command` and `graft query`: bound parameters, sent in
the SQLite state machine's JSON form (graft.sql_form.sql_request)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from graft.cli.errors import GraftCLIError
from graft.sql_form import sql_request

F = TypeVar("F", bound=Callable[..., Any])


def param_options(function: F) -> F:
    """-p/--param VALUE (repeatable) and --param-json JSON."""
    function = click.option(
        "--param-json",
        "param_json",
        default=None,
        metavar="JSON",
        help="All parameters as JSON: an object for :name ('{\"name\": 5}') or a list for ?. "
        'A BLOB is {"blob": "<base64>"}.',
    )(function)
    return click.option(
        "-p",
        "--param",
        "params",
        multiple=True,
        metavar="VALUE",
        help="Bind the next ? to VALUE (repeatable). Typed as JSON when it parses as a number, "
        'null, true or false, or a "quoted" string; otherwise the text as it is.',
    )(function)


def param_value(text: str) -> Any:
    """VALUE of -p: 42 -> 42, 1.5 -> 1.5, null -> None, true -> True, '"42"' -> "42", and
    anything that is not one JSON scalar -> the text itself (abc -> "abc")."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return text  # a JSON list or object given to -p is meant as text


def with_params(sql: bytes, params: Sequence[str], param_json: str | None) -> bytes:
    """The body to send: ``sql`` as it is without parameters, else the JSON form with the one
    statement ``sql`` and its parameters."""
    if not params and param_json is None:
        return sql
    if params and param_json is not None:
        raise GraftCLIError("give parameters either with -p or with --param-json, not both")
    try:
        text = sql.decode("utf-8")
    except UnicodeDecodeError:
        raise GraftCLIError("the SQL is not UTF-8 text") from None
    bound: Any
    if param_json is not None:
        try:
            bound = json.loads(param_json)
        except ValueError as e:
            raise GraftCLIError(f"--param-json is not valid JSON ({e})") from None
        if not isinstance(bound, dict | list):
            raise GraftCLIError(
                "--param-json must be a JSON object (for :name) or a list (for ?), e.g. "
                "'{\"name\": 5}'"
            )
        # Sent as given ({"blob": ...} values included): the node checks every value.
        return json.dumps(
            {"statements": [{"sql": text, "params": bound}]}, ensure_ascii=False
        ).encode("utf-8")
    bound = [param_value(p) for p in params]
    return sql_request([(text, bound)])
