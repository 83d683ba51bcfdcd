"""graft.client's request loop: how a request reaches the cluster, whatever it asks.

:class:`RequestLoop` holds the members and the connection settings, and sends one request to
one node (``request``): it follows 307/308 redirects itself (urllib refuses to re-send a POST
body), keeping the token only for a member or the same origin, and turns an error answer or a
failed connection into a ClientError (graft/client_errors.py). ``retrying`` sends a request
to the members in turn until the deadline: it walks the list when a node is down and retries
what retrying can fix (RETRYABLE: ``no_leader``, which means the request was not accepted and
an election is probably under way), with exponential backoff. ``no_quorum`` sends it on to
the next member at once (it may be in the majority) and ends the request once every member
answered so or not at all. Never a 4xx (``stale``, ``min_index_beyond_log``, ...): the same
request gets the same answer. ``gave_up`` words the error that ends it.

GraftClient (graft/client.py) derives from it and adds the operations; the commands of a
session (graft/client_sessions.py) register with ``retrying`` and are sent by a loop of their
own over ``request``, which ends with ``gave_up`` too.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from graft.client_errors import ClientError, Unreachable, error_from_answer, transport_error

# How often a 307 may be followed before we suspect a loop between two nodes.
MAX_REDIRECTS = 5
# Backoff between no_leader retries: starts short (elections take a few hundred ms).
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0
# The answers every request retries: nothing was done, and an election that ends or a member
# in the majority (the walk moves on to the next URL) can do better.
RETRYABLE = ("no_leader", "no_quorum")
# Reads also retry a timeout: they change nothing.
RETRYABLE_READS = (*RETRYABLE, "timeout")


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """A successful (2xx) answer; ``url`` is where it finally came from, after redirects."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def header_int(self, name: str) -> int | None:
        return int_header(self.header(name))

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def duplicate(self) -> bool:
        """Whether a session's dedup answered: the command had been applied by an earlier try,
        and this is its first result again (``Graft-Duplicate: true``)."""
        return (self.header("Graft-Duplicate") or "").lower() == "true"


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turn every redirect into an HTTPError, so the caller sees the 307 itself (the client
    re-sends method and body; a test harness checks the redirect). The one such handler."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(kw_only=True)
class RequestLoop:
    """Talks to the members at ``urls`` (API base URLs such as ``http://127.0.0.1:8080``).

    ``names`` maps a base URL to its node id for messages; ``timeout`` bounds a whole operation,
    retries included. ``sleep`` and ``clock`` are injectable so tests need not wait.
    """

    urls: Sequence[str]
    names: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    token: str | None = None
    ssl_context: ssl.SSLContext | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    # False: an unreachable member fails at once instead of being retried until the deadline
    # (for a caller that must know quickly, like `graft start --join`).
    retry_unreachable: bool = True
    # The bound of each try of a command under a session, so that a node that accepts the
    # connection and never answers is left for another; None: the time left to the deadline.
    attempt_timeout: float | None = None
    # A number in [0, 1) per pause: retries under a session wait between half and all of the
    # backoff, so that clients a failure struck together do not retry together.
    jitter: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("GraftClient needs at least one URL")
        self.urls = [url.rstrip("/") for url in self.urls]
        handlers: list[urllib.request.BaseHandler] = [NoRedirects()]
        if self.ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self.ssl_context))
        self._opener = urllib.request.build_opener(*handlers)

    # -- one request to one node -------------------------------------------------------------

    def name_of(self, url: str) -> str:
        base = _base_url(url)
        return self.names.get(base, base)

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one request, following up to MAX_REDIRECTS 307/308 answers with the same method
        and body. Raises ClientError for every non-2xx answer and every transport failure."""
        with self._open(method, url, body=body, headers=headers, timeout=timeout) as (raw, final):
            try:
                data = raw.read()
            except (OSError, http.client.HTTPException) as failure:
                raise self._transport_error(final, failure) from None
            return Response(
                status=raw.status,
                headers={k.lower(): v for k, v in raw.headers.items()},
                body=data,
                url=final,
            )

    @contextlib.contextmanager
    def _open(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Iterator[tuple[Any, str]]:
        """The open 2xx answer (body not read yet) and the URL it finally came from."""
        per_try = self.timeout if timeout is None else timeout
        all_headers = {"Accept": "application/json"}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            all_headers["Content-Type"] = "text/plain"
        all_headers.update(headers or {})
        for _ in range(MAX_REDIRECTS + 1):
            req = urllib.request.Request(url, data=body, headers=all_headers, method=method)
            try:
                raw = self._opener.open(req, timeout=max(per_try, 0.01))
            except urllib.error.HTTPError as answer:
                with answer:
                    location = answer.headers.get("Location")
                    if answer.code in (307, 308) and location:
                        target = urllib.parse.urljoin(url, location)
                        if not self._may_carry_credentials(url, target):
                            all_headers.pop("Authorization", None)
                        url = target
                        continue
                    raise error_from_answer(answer.code, answer.read(), self.name_of(url)) from None
            except urllib.error.URLError as failure:
                raise self._transport_error(url, failure.reason) from None
            except (OSError, http.client.HTTPException) as failure:
                raise self._transport_error(url, failure) from None
            with raw:
                yield raw, url
            return
        raise ClientError(
            "redirect_loop",
            None,
            f"more than {MAX_REDIRECTS} redirects starting at {self.name_of(url)}: the nodes "
            "disagree about the leader; retry in a moment or check `graft status`",
        )

    def _may_carry_credentials(self, current: str, target: str) -> bool:
        """Whether a redirect from ``current`` to ``target`` may keep the Authorization header:
        only to the same origin or to one of the members the client was given, and never from
        https to http. Anything else (a node's Location pointing elsewhere, by mistake or by
        an attacker) would hand the token to a stranger, or send it in clear text."""
        if urllib.parse.urlsplit(current).scheme.lower() == "https" and (
            urllib.parse.urlsplit(target).scheme.lower() != "https"
        ):
            return False
        origin = _origin(target)
        if origin is None:
            return False
        return origin == _origin(current) or origin in {_origin(u) for u in self.urls}

    def _transport_error(self, url: str, reason: object) -> ClientError:
        return transport_error(self.name_of(url), _base_url(url), reason)

    def retrying(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        retry_codes: Sequence[str] = RETRYABLE,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
        attempt_timeout: float | None = None,
    ) -> Response:
        """Send the request to the members in turn until it is answered, retrying
        ``retry_codes`` and unreachable members until ``deadline`` (default: the client's
        timeout from now); each try waits at most ``attempt_timeout`` if given."""
        if deadline is None:
            deadline = self.clock() + self.timeout
        backoff = FIRST_BACKOFF_S
        turn = 0
        last: ClientError | None = None
        # A no_quorum answer, and the answers since that no retry changes soon (no_quorum, or
        # none at all): once every member has given one, waiting does not help.
        quorum_answer: ClientError | None = None
        hopeless = 0
        while True:
            url = self.urls[turn % len(self.urls)]
            remaining = deadline - self.clock()
            if attempt_timeout is not None:
                remaining = min(remaining, attempt_timeout)
            try:
                return self.request(
                    method, url + path, body=body, headers=headers, timeout=remaining
                )
            except Unreachable as err:
                last = err
                turn += 1
                hopeless += 1
                if quorum_answer is not None and hopeless >= len(self.urls):
                    break
                # Walk the whole list before pausing: another member may be up.
                if turn % len(self.urls) != 0:
                    continue
                if not self.retry_unreachable:
                    break
            except ClientError as err:
                if not _retryable(err, retry_codes):
                    raise
                last = err
                turn += 1
                if err.code == "no_quorum":
                    # Another member may be in the majority: ask it now.
                    quorum_answer = err
                    hopeless += 1
                    if hopeless >= len(self.urls):
                        break
                    continue
                quorum_answer, hopeless = None, 0
            if self.clock() + backoff >= deadline:
                break
            self.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        assert last is not None
        raise self.gave_up(last, quorum_answer)

    def gave_up(self, last: ClientError, quorum_answer: ClientError | None) -> ClientError:
        """The error to raise when retrying ended on ``last`` (``quorum_answer``: the
        no_quorum answer it ended on, if it did)."""
        if quorum_answer is not None:
            # The node's message names the voters out of reach and what to do: no more advice.
            return ClientError(
                "no_quorum", quorum_answer.status, f"no quorum: {quorum_answer.message}"
            )
        if isinstance(last, Unreachable) and len(self.urls) > 1:
            return Unreachable(f"no member answered ({len(self.urls)} tried, last: {last.message})")
        if last.code == "no_leader":
            return ClientError(
                "no_leader",
                last.status,
                f"the cluster had no leader for {self.timeout:g}s of retrying (last answer: "
                f"{_without_retry_advice(last.message)}): check `graft status`; a majority of "
                "the voters must be up and connected",
            )
        return last


def int_header(value: str | None) -> int | None:
    """A header's value as an int; None when it is absent or not a number."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _retryable(error: ClientError, codes: Sequence[str]) -> bool:
    """Whether a retry may get another answer: one of ``codes``, and never a 4xx (the same
    request gets the same refusal)."""
    if error.status is not None and 400 <= error.status < 500:
        return False
    return error.code in codes


def _without_retry_advice(message: str) -> str:
    """A node's message without its closing "retry" advice, for a client that has retried."""
    return re.sub(r"[;:,]\s*retry( shortly)?\.?$", "", message.rstrip())


def _base_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, default ports filled in; None if it has no host."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname:
        return None
    return scheme, parts.hostname, port or {"http": 80, "https": 443}.get(scheme, 0)
