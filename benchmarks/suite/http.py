"""Small blocking HTTP helpers for the suite's control plane (status, probes); not for load."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any


def call(
    url: str, body: bytes | None = None, *, method: str | None = None, timeout: float = 2
) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered (refused, reset, timed out)."""
    request = urllib.request.Request(
        url,
        data=body,
        method=method or ("POST" if body is not None else "GET"),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (TimeoutError, OSError):
        return 0, b""


def call_json(url: str, body: Any = None, *, timeout: float = 2) -> Any | None:
    """The decoded JSON answer of a 200, or None."""
    data = None if body is None else json.dumps(body).encode()
    status, raw = call(url, data, timeout=timeout)
    if status != 200:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def wait_until(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll `check` until it returns something truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s; see the node logs")
