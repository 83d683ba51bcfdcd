"""Bearer-token authorization with three nested roles.

Only sha256 hex digests of tokens are configured. A presented token is hashed and compared with
every configured digest using hmac.compare_digest, without stopping at the first match, so the
time taken does not say which digest (or how much of one) matched.

Answers: no ``Authorization: Bearer`` header, or a token that matches no digest -> 401
``unauthorized`` (RFC 6750: the credentials are missing or invalid, the client should get a
valid token); a valid token whose role is below the route's -> 403 ``forbidden`` (the client
is known but must use a token of a higher role).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping

from graft.errors import Forbidden, Unauthorized


class Role(enum.IntEnum):
    """Each role allows everything the lower ones allow."""

    READ = 1  # queries, status, readiness, metrics
    WRITE = 2  # commands
    ADMIN = 3  # cluster administration


_ROLE_NAMES = {"read": Role.READ, "write": Role.WRITE, "admin": Role.ADMIN}


def token_digest(token: str) -> str:
    """What the config stores for a token: its sha256 as lowercase hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenAuthority:
    """Decides whether an Authorization header value grants a role."""

    def __init__(self, tokens: Mapping[str, frozenset[str]]) -> None:
        self._digests = _digests(tokens)

    def replace(self, tokens: Mapping[str, frozenset[str]]) -> None:
        """Use these tokens from the next request on (a reload): a token no longer listed is
        refused, a new one accepted. One assignment, so a request sees the old or the new set."""
        self._digests = _digests(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def authorize(self, authorization: str | None, needed: Role) -> None:
        """Return if the header grants ``needed`` (or authentication is off); else raise
        Unauthorized or Forbidden."""
        if not self._digests:
            return
        token = _bearer_token(authorization)
        if token is None:
            raise Unauthorized("this API requires a token: send 'Authorization: Bearer <token>'")
        granted = self._role_of(token)
        if granted is None:
            raise Unauthorized("the bearer token is not valid: check it against the config")
        if granted < needed:
            raise Forbidden(
                f"this request needs a {needed.name.lower()} token, the one sent is "
                f"{granted.name.lower()}: use a token of a higher role"
            )

    def _role_of(self, token: str) -> Role | None:
        presented = token_digest(token).encode("ascii")
        best: Role | None = None
        for digest, role in self._digests:
            # Every digest is compared, match or not, so timing does not depend on the position.
            if hmac.compare_digest(presented, digest) and (best is None or role > best):
                best = role
        return best


def _digests(tokens: Mapping[str, frozenset[str]]) -> list[tuple[bytes, Role]]:
    return [
        (digest.strip().lower().encode("ascii"), _ROLE_NAMES[role])
        for role, digests in tokens.items()
        if role in _ROLE_NAMES
        for digest in digests
    ]


def _bearer_token(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
