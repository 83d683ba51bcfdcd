"""A key-value register with compare-and-set, for tests and benchmarks (DESIGN.md section 6).

Keys and values are strings; commands, queries and answers are JSON objects:

    command {"op": "put", "key": K, "value": V}          -> {"prev": old-or-null}
    command {"op": "cas", "key": K, "expect": E-or-null, "value": V}
                                                         -> {"ok": bool, "value": current-or-null}
    command {"op": "delete", "key": K}                   -> {"prev": old-or-null}
    query   {"op": "get", "key": K}                      -> {"value": V-or-null}

``cas`` stores V only if the key's current value equals E (null: the key is absent); the answer's
``value`` is the key's value after the command. Input is validated strictly: malformed JSON, a
field missing or extra, a key written twice, a value that is not a string, text holding a lone
UTF-16 surrogate escape ("\\ud800"), or more than KV_MAX_CONTAINERS JSON arrays and objects
(counted before decoding) is refused with CommandRejected/QueryRejected and changes nothing.

The snapshot is the whole map in the ``graft.kv/2`` format of graft.fsm.kv_snapshot (sorted
records, one per line, so that equal states give equal bytes), written off the reactor thread
and read back record by record. A map of ``fork_min_keys`` keys or more is written by a forked
child process from a copy-on-write image (the module docstring of graft.fsm.kv_snapshot says
why and at what price); the reactor only pays for the fork. A smaller map is written by a
worker thread: ``begin_snapshot`` takes no copy, it hands the dict to the writer and, until
the writer is done, commands write to an overlay (copy on write) in front of it; once the
writer is done, the overlay is merged back a few entries per command. The thread writer sorts
and encodes in small pieces, so the reactor thread waits at most a piece's worth of GIL time.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from graft.fsm.base import CommandRejected, QueryRejected
from graft.fsm.kv_map import MASK, ShardedMap
from graft.fsm.kv_snapshot import ForkedWriter, ThreadWriter, can_fork, read_records
from graft.fsm.limits import KV_MAX_CONTAINERS

__all__ = ["KeyValueStateMachine"]

# op -> the exact set of fields it takes, besides "op".
_COMMANDS = {
    "put": frozenset({"key", "value"}),
    "cas": frozenset({"key", "expect", "value"}),
    "delete": frozenset({"key"}),
}
_QUERIES = {"get": frozenset({"key"})}
# Maps this large or larger are snapshotted by a forked child (graft.fsm.kv_snapshot): below,
# encoding in a thread costs less than the fork (tens of ms at 20,000 keys).
FORK_MIN_KEYS = 20_000
# Overlay entries merged into the map per command once no writer reads the map any more.
_MERGE_PER_COMMAND = 64


class _Malformed(ValueError):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):  # rare: find the field to name
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Malformed(f"field {key!r} appears twice")
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise _Malformed(f"{name} is not valid JSON")


# One decoder for every call: json.loads with hooks builds a new JSONDecoder each time.
def _small_int(digits: str) -> int:
    """A JSON integer, refused beyond 19 digits before int() sees it: kv takes no numbers, and
    int()'s own digit limit (4,300 by default) is an interpreter setting that may differ
    between nodes (PYTHONINTMAXSTRDIGITS), so it must never decide a command."""
    if len(digits) > 20:  # a sign and 19 digits
        raise _Malformed(f"a number of {len(digits)} characters; expected a string")
    return int(digits)


_DECODER = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant, parse_int=_small_int
)
_scan: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _decode(text: str) -> Any:
    """``_DECODER.decode(text)``, minus its two whitespace regex passes when the text is one
    JSON value with nothing around it (what clients send); anything else takes the full path,
    which raises the precise error."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return _DECODER.decode(text)
    if end != len(text):
        return _DECODER.decode(text)
    return value


# op -> its fields in a fixed order, for the checks on the hot path.
_FIELD_ORDER = {op: tuple(sorted(fields)) for op, fields in (_COMMANDS | _QUERIES).items()}


def _check_containers(text: str, kind: str) -> None:
    """_Malformed if the text holds more than KV_MAX_CONTAINERS JSON arrays and objects outside
    strings. Checked before decoding: the decoder recurses once per nesting level, and running
    out of stack (RecursionError) depends on the node, not on the input."""
    if text.count("[") + text.count("{") <= KV_MAX_CONTAINERS:  # the usual case: no scan
        return
    # Drop escaped backslashes, then escaped quotes: every quote left opens or closes a string,
    # so the pieces at even positions are what lies outside strings. All in C, linear.
    pieces = text.replace("\\\\", "").replace('\\"', "").split('"')
    outside = "".join(pieces[0::2])
    if outside.count("[") + outside.count("{") > KV_MAX_CONTAINERS:
        raise _Malformed(
            f"the {kind} holds more than {KV_MAX_CONTAINERS} JSON arrays and objects; "
            "expected one flat JSON object of strings"
        )


def _check_text(request: dict[str, Any], kind: str) -> None:
    """_Malformed if a field name or string value is not valid Unicode text: JSON escapes can
    spell a lone UTF-16 surrogate ("\\ud800"), which no UTF-8 encoder accepts, so it could never
    be answered, snapshotted or sent to another node."""
    for name, value in request.items():
        for text in (name, value):
            if type(text) is str and not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise _Malformed(
                        f"the {kind} holds a lone UTF-16 surrogate escape in {json.dumps(name)} "
                        "(such as \\ud800 without its pair); expected valid Unicode text"
                    ) from None


def _parse(data: bytes, ops: dict[str, frozenset[str]], kind: str) -> tuple[str, dict[str, Any]]:
    """The op and the fields of a request, or _Malformed saying what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed(f"the {kind} is not UTF-8; expected a JSON object") from None
    _check_containers(text, kind)
    try:
        request = _decode(text)
    except json.JSONDecodeError as e:
        raise _Malformed(f"the {kind} is not valid JSON ({e}); expected a JSON object") from None
    if type(request) is not dict:
        raise _Malformed(f"the {kind} is a JSON {type(request).__name__}; expected an object")
    op = request.get("op")
    if type(op) is not str or op not in ops:
        examples = " or ".join(repr(op) for op in ops)
        raise _Malformed(f'"op" is {json.dumps(op)}; expected {examples}')
    if "\\ud" in text or "\\uD" in text:  # only a \uD800-\uDFFF escape makes a surrogate
        _check_text(request, kind)
    names = _FIELD_ORDER[op]
    if len(request) != len(names) + 1 or not all(name in request for name in names):
        _explain_fields(op, set(request) - {"op"}, ops[op])
    for name in names:
        value = request[name]
        if type(value) is not str and not (name == "expect" and value is None):
            allowed = "a string or null" if name == "expect" else "a string"
            raise _Malformed(f"{op}: {name} is {json.dumps(value)}; expected {allowed}")
    return op, request


def _explain_fields(op: str, fields: set[str], expected: frozenset[str]) -> None:
    missing = expected - fields
    if missing:
        raise _Malformed(f"{op}: missing field(s) {', '.join(sorted(missing))}")
    extra = fields - expected
    raise _Malformed(
        f"{op}: unknown field(s) {', '.join(sorted(extra))}; "
        f"expected only op, {', '.join(sorted(expected))}"
    )


# The commands clients send, fields in the documented order and strings without escapes,
# are matched by one regex each instead of the JSON decoder (a third of the cost, and the FSM
# runs on every node for every entry). A match is exactly a command the decoder would accept,
# as a JSON object of those fields and no other (so no field twice), with those string values.
# Anything else, valid or not, takes the decoder's path, which gives the precise error.
_WS = r"[ \t\n\r]*"
_STRING = r'"([^"\\\x00-\x1f]*)"'  # a JSON string needing no unescaping: the characters


def _shape(op: str, *fields: tuple[str, str]) -> re.Pattern[str]:
    members = [f'"op"{_WS}:{_WS}"{op}"'] + [f'"{n}"{_WS}:{_WS}{v}' for n, v in fields]
    return re.compile(_WS + r"\{" + _WS + f"{_WS},{_WS}".join(members) + _WS + r"\}" + _WS)


_FAST_PUT = _shape("put", ("key", _STRING), ("value", _STRING))
# A put as clients' JSON libraries write it, compact (separators=(",", ":")) or with
# json.dumps's default separators (group 1 is the space or nothing), its strings matched up to
# the next quote: with no control character and no backslash anywhere in the command, such a
# match is a match of _FAST_PUT, found at half its cost (its character class costs the regex
# engine a call per character; the table below finds those characters in one C loop).
_PLAIN_PUT = re.compile(r'\{"op":( ?)"put",\1"key":\1"([^"]*)",\1"value":\1"([^"]*)"\}')
# Changes exactly the control characters and the backslash: data.translate(_NOT_PLAIN) == data
# says the command holds neither.
_NOT_PLAIN = bytes(0x20 if b < 0x20 or b == 0x5C else b for b in range(256))
_FAST_DELETE = _shape("delete", ("key", _STRING))
_FAST_CAS = _shape("cas", ("key", _STRING), ("expect", f"(?:null|{_STRING})"), ("value", _STRING))


def _command(data: bytes) -> tuple[str, str, str | None, str | None]:
    """(op, key, expect, value) of a command, or CommandRejected saying what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = ""  # not a match: the full path names the problem
    match = _PLAIN_PUT.fullmatch(text)
    if match is not None and data.translate(_NOT_PLAIN) == data:
        return "put", match[2], None, match[3]
    match = _FAST_PUT.fullmatch(text)
    if match is not None:
        return "put", match[1], None, match[2]
    match = _FAST_DELETE.fullmatch(text)
    if match is not None:
        return "delete", match[1], None, None
    match = _FAST_CAS.fullmatch(text)
    if match is not None:
        return "cas", match[1], match[2], match[3]
    try:
        op, request = _parse(data, _COMMANDS, "command")
    except _Malformed as e:
        raise CommandRejected(str(e)) from None
    return op, request["key"], request.get("expect"), request.get("value")


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_encode_string = json.encoder.encode_basestring  # the encoder's own, for ensure_ascii=False


def _dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


def _prev(value: str | None) -> bytes:
    """``_dumps({"prev": value})``, without the encoder's per-call setup (the hot path)."""
    if value is None:
        return b'{"prev":null}'
    return f'{{"prev":{_encode_string(value)}}}'.encode()


def _utf8(text: str) -> int:
    """``len(text.encode())`` without encoding ASCII text (a flag CPython keeps)."""
    return len(text) if text.isascii() else len(text.encode())


def _resized(key: str, old: str | None, new: str | None) -> int:
    """How the map's UTF-8 size changes when ``key`` goes from ``old`` to ``new`` (None:
    absent)."""
    if old is None:
        return 0 if new is None else _utf8(key) + _utf8(new)
    if new is None:
        return -_utf8(key) - _utf8(old)
    return _utf8(new) - _utf8(old)


class KeyValueStateMachine:
    """A map of strings to strings (see the module docstring for the JSON contract)."""

    content_type = "application/json"

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        base_dir: Path | None = None,
        fork_min_keys: int = FORK_MIN_KEYS,
    ) -> None:
        del data_dir, base_dir  # the state lives in memory; snapshots and the log persist it
        # Snapshots of maps this large or larger are written by a forked child; 0: always,
        # a negative number: never (a thread writes them).
        self._fork_min_keys = fork_min_keys
        # Split by hash so that no resize copies the whole map (graft.fsm.kv_map says why).
        self._data = ShardedMap()
        # While snapshot writers read self._data it must not change: changes go here instead,
        # None meaning deleted. None when there is no overlay.
        self._overlay: dict[str, str | None] | None = None
        # Set by each writer reading self._data when it is done with it.
        self._readers: list[threading.Event] = []
        # The UTF-8 bytes of every key and value (the map with the overlay applied), kept as
        # commands apply: a pass over a map of a million keys held the reactor for 0.1-0.5 s,
        # and GET /status and /metrics asked for it every second.
        self._size = 0

    def apply(self, command: bytes, index: int) -> bytes:
        del index
        op, key, expect, value = _command(command)
        if self._overlay is None and op == "put":  # the common case, without the overlay's calls
            shard = self._data.shards[hash(key) & MASK]
            current = shard.get(key)
            shard[key] = value  # type: ignore[assignment]  # a put's value is a string
            if current is None and key.isascii() and value.isascii():  # type: ignore[union-attr]
                # A new key: _resized and _prev inline (this runs for every entry on every node).
                self._size += len(key) + len(value)  # type: ignore[arg-type]
                return b'{"prev":null}'
            self._size += _resized(key, current, value)
            return _prev(current)
        if self._overlay is not None:
            self._merge(_MERGE_PER_COMMAND)
        current = self._get(key)
        if op == "put":
            self._set(key, value)
            self._size += _resized(key, current, value)
            return _prev(current)
        if op == "delete":
            self._set(key, None)
            self._size += _resized(key, current, None)
            return _prev(current)
        # cas
        if current != expect:
            return _dumps({"ok": False, "value": current})
        self._set(key, value)
        self._size += _resized(key, current, value)
        return _dumps({"ok": True, "value": value})

    def size_bytes(self) -> int:
        """The UTF-8 length of every key and value (for metrics and status), kept as commands
        apply."""
        return self._size

    def query(self, query: bytes) -> bytes:
        try:
            _, request = _parse(query, _QUERIES, "query")
        except _Malformed as e:
            raise QueryRejected(str(e)) from None
        return _dumps({"value": self._get(request["key"])})

    def snapshot(self, sink: BinaryIO) -> None:
        self.begin_snapshot()(sink)

    def begin_snapshot(self) -> Callable[[BinaryIO], None]:
        if 0 <= self._fork_min_keys <= len(self._data) and can_fork():
            # The child gets the map and the overlay as they are now; nothing to pin here.
            return ForkedWriter(self._data, self._overlay)
        if self._overlay is not None and self._merge(len(self._overlay)) is not None:
            # An earlier writer still reads the map: give this one a map of its own (a copy,
            # the slow path, only when snapshots overlap).
            self._data = self._merged()
            self._overlay = None
            self._readers = []
        done = threading.Event()
        self._readers.append(done)
        self._overlay = {}
        return ThreadWriter(self._data, done)

    def restore(self, source: BinaryIO) -> None:
        # CorruptSnapshot leaves the state as it was.
        records = read_records(source)
        size = sum(_utf8(k) + _utf8(v) for k, v in records.items())
        self._data = ShardedMap(records)
        self._size = size
        self._overlay = None
        self._readers = []  # a writer still running keeps the old map to itself

    def close(self) -> None:
        self._data = ShardedMap()
        self._size = 0
        self._overlay = None
        self._readers = []

    # --- the overlay --------------------------------------------------------------------------

    def _get(self, key: str) -> str | None:
        if self._overlay is not None and key in self._overlay:
            return self._overlay[key]
        return self._data.shards[hash(key) & MASK].get(key)

    def _set(self, key: str, value: str | None) -> None:
        if self._overlay is not None:
            self._overlay[key] = value
        elif value is None:
            self._data.pop(key, None)
        else:
            self._data[key] = value

    def _merge(self, most: int) -> dict[str, str | None] | None:
        """Move up to ``most`` overlay entries into the map if no writer reads it any more;
        the overlay left (None when it is gone)."""
        overlay = self._overlay
        if overlay is None:
            return None
        if self._readers:
            if not all(done.is_set() for done in self._readers):
                return overlay
            self._readers = []
        for _ in range(min(most, len(overlay))):
            key, value = overlay.popitem()
            if value is None:
                self._data.pop(key, None)
            else:
                self._data[key] = value
        if not overlay:
            self._overlay = None
        return self._overlay

    def _merged(self) -> ShardedMap:
        """A new map holding the map with the overlay applied."""
        merged = self._data.copy()
        for key, value in (self._overlay or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged
