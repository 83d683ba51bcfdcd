"""graft.reload in memory: POST /reload and the token swap on the API, NodeReloader's
all-or-nothing reload from the config file, and the daily warning before the certificate
expires."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from graft.api.auth import Role, TokenAuthority, token_digest
from graft.api.site import make_api_resource
from graft.certs import certificate_not_after, generate_certificates, renew_certificates
from graft.config import load_config
from graft.errors import ReloadFailed, Unauthorized
from graft.reload import DAY_S, ExpiryWarner, NodeReloader, ReloadOnSignal
from graft.transport import TLSContexts
from tests.api.fakes import ADMIN, ApiTestCase, Settings, bearer, tokens

NEW_ADMIN = "new-admin-token"


class LogCapture:
    """The formatted events of graft.reload while installed."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "graft.reload":
            self.events.append(event)

    def install(self, test: SynchronousTestCase) -> LogCapture:
        observer: Any = self
        globalLogPublisher.addObserver(observer)
        test.addCleanup(globalLogPublisher.removeObserver, observer)
        return self

    def text(self) -> str:
        return "\n".join(formatEvent(event) for event in self.events)


class ReloadRouteTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.settings = Settings(tokens=tokens(admin=ADMIN))
        self.auth = TokenAuthority(self.settings.tokens)
        self.reloads = 0

        def reload() -> dict[str, Any]:
            self.reloads += 1
            self.auth.replace({"admin": frozenset({token_digest(NEW_ADMIN)})})
            return {"node": "turing", "tokens": {"admin": 1}}

        self.serve(self.settings)
        # The same fake backend, served with the reload and the authority it swaps tokens in.
        self.stub = StubTreq(
            make_api_resource(
                self.backend, self.settings, reactor=self.clock, auth=self.auth, reload=reload
            )
        )

    def test_reload_swaps_tokens_for_the_next_requests(self) -> None:
        """POST /reload needs admin; after it the old token is refused and the new accepted."""
        self.assertEqual(self.call("GET", "/status", headers=bearer(ADMIN)).status, 200)
        answer = self.call("POST", "/reload", data=b"", headers=bearer(ADMIN))
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(answer.json()["tokens"], {"admin": 1})
        self.assertEqual(self.reloads, 1)
        self.assertError(self.call("GET", "/status", headers=bearer(ADMIN)), 401, "unauthorized")
        self.assertEqual(self.call("GET", "/status", headers=bearer(NEW_ADMIN)).status, 200)

    def test_reload_needs_the_admin_role(self) -> None:
        self.assertError(self.call("POST", "/reload", data=b""), 401, "unauthorized")
        self.assertEqual(self.reloads, 0)


class NodeReloaderTests(SynchronousTestCase):
    """A real config file and certificates; the transport is a TLSContexts behind a stub."""

    def setUp(self) -> None:
        self.base = Path(self.mktemp())
        self.base.mkdir()
        self.write_config(tokens={"admin": [token_digest("old")]})
        self.cfg = load_config(self.path)
        generate_certificates(self.cfg)
        self.contexts = TLSContexts(self.cfg.tls_for("turing"))
        self.auth = TokenAuthority(self.cfg.api.tokens)
        self.certificates: list[tuple[Path, float | None]] = []

        contexts = self.contexts

        class Transport:
            def reload_tls(self, tls: Any) -> None:
                contexts.reload(tls)

        self.reloader = NodeReloader(
            config_path=self.path,
            node_id="turing",
            transport=Transport(),  # type: ignore[arg-type]
            tokens=self.auth,
            api_tls=None,
            on_certificate=lambda path, when: self.certificates.append((path, when)),
        )

    def write_config(self, *, tokens: dict[str, list[str]]) -> None:
        self.path = self.base / "cluster.yaml"
        document = {
            "cluster": "test",
            "peers": {
                "turing": {"host": "127.0.0.1", "ports": {"p2p": 9301, "api": 9302}},
                "ritchie": {"host": "127.0.0.1", "ports": {"p2p": 9303, "api": 9304}},
            },
            "api": {"tokens": tokens},
        }
        self.path.write_text(yaml.safe_dump(document))

    def test_reload_uses_the_renewed_certificate_and_new_tokens(self) -> None:
        renew_certificates(self.cfg, ["turing"], days=10)
        self.write_config(tokens={"admin": [token_digest("new")], "read": [token_digest("r")]})
        answer = self.reloader.reload()
        self.assertEqual(answer["tokens"], {"admin": 1, "read": 1})
        cert = self.cfg.tls_for("turing").cert
        self.assertEqual(self.certificates, [(cert, certificate_not_after(cert))])
        self.assertEqual(
            self.contexts.identity.original.get_serial_number(),
            TLSContexts(self.cfg.tls_for("turing")).identity.original.get_serial_number(),
        )
        self.auth.authorize("Bearer new", needed=Role.ADMIN)
        with self.assertRaises(Unauthorized):
            self.auth.authorize("Bearer old", needed=Role.READ)

    def test_a_bad_file_changes_nothing(self) -> None:
        """A key that does not fit: ReloadFailed names it; tokens and certificate stay."""
        serial = self.contexts.identity.original.get_serial_number()
        self.write_config(tokens={"admin": [token_digest("new")]})
        files = self.cfg.tls_for("turing")
        renew_certificates(self.cfg, ["ritchie"])
        shutil.copy(self.cfg.tls_for("ritchie").key, files.key)
        with self.assertRaises(ReloadFailed) as caught:
            self.reloader.reload()
        self.assertIn(str(files.key), str(caught.exception))
        self.assertIn("nothing was reloaded", str(caught.exception))
        self.assertEqual(self.contexts.identity.original.get_serial_number(), serial)
        self.auth.authorize("Bearer old", needed=Role.ADMIN)
        self.assertEqual(self.certificates, [])

    def test_a_config_that_does_not_load_changes_nothing(self) -> None:
        self.path.write_text("peers: [")
        with self.assertRaises(ReloadFailed):
            self.reloader.reload()
        self.auth.authorize("Bearer old", needed=Role.ADMIN)

    def test_signal_reload_logs_a_failure(self) -> None:
        """The SIGHUP path logs a failed reload instead of raising into the reactor."""
        log = LogCapture().install(self)
        self.path.write_text("peers: [")
        ReloadOnSignal(self.reloader.reload, Clock()).reload_now()
        self.assertIn("reload failed", log.text())


class ExpiryWarningTests(SynchronousTestCase):
    def warner(self, days_left: float) -> tuple[ExpiryWarner, Clock, LogCapture]:
        clock = Clock()
        clock.advance(1_000_000)
        log = LogCapture().install(self)
        warner = ExpiryWarner(
            "turing", Path("turing.pem"), clock.seconds() + days_left * DAY_S, clock
        )
        warner.startService()
        self.addCleanup(warner.stopService)
        return warner, clock, log

    def test_warns_once_a_day_from_30_days_before(self) -> None:
        _, clock, log = self.warner(40)
        self.assertNotIn("expires", log.text())
        clock.advance(9 * DAY_S + 1)  # 31 days left less a second: no warning yet
        self.assertNotIn("expires", log.text())
        clock.advance(DAY_S)  # 30 days left, less a second
        self.assertEqual(log.text().count("expires in 29 days"), 1)
        clock.advance(DAY_S / 2)
        self.assertEqual(log.text().count("expires in"), 1)  # not twice a day
        clock.advance(DAY_S / 2)
        self.assertEqual(log.text().count("expires in 28 days"), 1)
        self.assertIn("graft certs renew", log.text())

    def test_expired_is_an_error_and_renewal_stops_the_warnings(self) -> None:
        warner, clock, log = self.warner(0.5)
        self.assertIn("expires in 0 days", log.text())
        clock.advance(DAY_S)
        self.assertIn("expired at", log.text())
        warner.update(Path("turing.pem"), clock.seconds() + 365 * DAY_S)
        before = log.text()
        clock.advance(3 * DAY_S)
        self.assertEqual(log.text(), before)
