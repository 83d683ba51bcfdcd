"""The ``api`` section of the config file: HTTPS, bearer tokens by role, body size and time
limits, ``api.limits`` and the allowed web origins."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from graft.config import TOKEN_ROLES, ApiConfig, ApiLimits, ApiTLSConfig
from graft.config.reader import Reader, show
from graft.origin import normalize_origin

_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class ApiSectionReader(Reader):
    """Reads ``api`` and its subsections."""

    def api(self, value: Any) -> ApiConfig:
        section = self.mapping(
            "api",
            value,
            (
                "tls",
                "tokens",
                "max_body_bytes",
                "command_timeout_ms",
                "query_timeout_ms",
                "max_query_timeout_ms",
                "limits",
                "allowed_origins",
            ),
            "a mapping {tls, tokens, max_body_bytes, command_timeout_ms, query_timeout_ms, "
            "max_query_timeout_ms, limits, allowed_origins}",
        )
        default = ApiConfig()
        tls = None
        if section.get("tls") is not None:
            tls = self.api_tls(section["tls"])
        tokens: dict[str, frozenset[str]] = {}
        if section.get("tokens") is not None:
            tokens = self.tokens(section["tokens"])
        return ApiConfig(
            tls=tls,
            tokens=MappingProxyType(tokens),
            max_body_bytes=self.integer(
                "api.max_body_bytes",
                section.get("max_body_bytes", default.max_body_bytes),
                minimum=1,
            ),
            command_timeout_ms=self.integer(
                "api.command_timeout_ms",
                section.get("command_timeout_ms", default.command_timeout_ms),
                minimum=1,
            ),
            query_timeout_ms=self.integer(
                "api.query_timeout_ms",
                section.get("query_timeout_ms", default.query_timeout_ms),
                minimum=1,
            ),
            max_query_timeout_ms=self.max_query_timeout(section, default),
            limits=self.api_limits(section.get("limits")),
            allowed_origins=self.allowed_origins(section.get("allowed_origins")),
        )

    def max_query_timeout(self, section: Mapping[str, Any], default: ApiConfig) -> int:
        query_ms = section.get("query_timeout_ms", default.query_timeout_ms)
        value = section.get("max_query_timeout_ms", max(default.max_query_timeout_ms, query_ms))
        maximum = self.integer("api.max_query_timeout_ms", value, minimum=1)
        if maximum < query_ms:
            raise self.fail(
                "api.max_query_timeout_ms",
                f"{maximum} is less than api.query_timeout_ms ({query_ms}); expected the largest "
                "time limit a query may ask for, at least the default one",
            )
        return maximum

    # --- api.limits and api.allowed_origins (issue 14) ----------------------------------------

    def api_limits(self, value: Any) -> ApiLimits:
        default = ApiLimits()
        if value is None:
            return default
        names = (
            "max_batch_commands",
            "max_pending_commands",
            "max_read_waiters",
            "max_connections",
            "request_deadline_ms",
        )
        section = self.mapping("api.limits", value, names, "a mapping {" + ", ".join(names) + "}")
        numbers = {
            name: self.integer(
                f"api.limits.{name}", section.get(name, getattr(default, name)), minimum=1
            )
            for name in names
        }
        limits = ApiLimits(**numbers)
        if limits.max_pending_commands < limits.max_batch_commands:
            raise self.fail(
                "api.limits.max_pending_commands",
                f"{limits.max_pending_commands} is less than api.limits.max_batch_commands "
                f"({limits.max_batch_commands}); expected room for at least one whole batch",
            )
        return limits

    def allowed_origins(self, value: Any) -> frozenset[str]:
        if value is None:
            return frozenset()
        expected = 'a list of origins such as "https://console.example.com:8443"'
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.wrong_type("api.allowed_origins", value, expected)
        origins = set()
        for i, item in enumerate(value):
            origin = normalize_origin(item) if isinstance(item, str) else None
            if origin is None:
                raise self.fail(
                    f"api.allowed_origins[{i}]",
                    f"{show(item)} is not an origin; expected scheme://host[:port] with "
                    "scheme http or https and no path",
                )
            origins.add(origin)
        return frozenset(origins)

    def api_tls(self, value: Any) -> ApiTLSConfig:
        section = self.mapping(
            "api.tls", value, ("cert", "key", "client_ca"), "a mapping {cert, key, client_ca}"
        )
        for needed, other in (("cert", "key"), ("key", "cert")):
            if needed not in section:
                has = f"{other} is set but " if other in section else ""
                raise self.fail(
                    "api.tls",
                    f"{has}{needed} is missing; expected both cert and key (client_ca optional)",
                )
        client_ca = None
        if section.get("client_ca") is not None:
            client_ca = self.path_template(
                "api.tls.client_ca", section["client_ca"], "certs/ca.pem"
            )
        return ApiTLSConfig(
            cert=self.path_template("api.tls.cert", section["cert"], "certs/{id}-api.pem"),
            key=self.path_template("api.tls.key", section["key"], "certs/{id}-api.key"),
            client_ca=client_ca,
        )

    def tokens(self, value: Any) -> dict[str, frozenset[str]]:
        expected = "a mapping of role (read, write, admin) to a list of sha256 hex digests"
        if not isinstance(value, dict):
            raise self.wrong_type("api.tokens", value, expected)
        tokens: dict[str, frozenset[str]] = {}
        for role, digests in value.items():
            key = f"api.tokens.{role}"
            if role not in TOKEN_ROLES:
                raise self.fail(
                    key, f"unknown role {show(role)}; expected one of: {', '.join(TOKEN_ROLES)}"
                )
            if isinstance(digests, str):
                digests = [digests]
            if not isinstance(digests, list):
                raise self.wrong_type(key, digests, "a list of sha256 hex digests")
            checked = set()
            for i, digest in enumerate(digests):
                if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
                    raise self.fail(
                        f"{key}[{i}]",
                        f"{show(digest)} is not a sha256 hex digest; expected 64 hex characters "
                        "(store the hash of the token, never the token: "
                        "`printf %s TOKEN | sha256sum`)",
                    )
                checked.add(digest.lower())
            tokens[role] = frozenset(checked)
        return tokens
