"""POST /sessions and the session headers of /command and /commands, against a FakeBackend
whose session operations go through the real session table (graft.sessions)."""

from __future__ import annotations

from typing import Any

from tests.api.fakes import Answer, ApiTestCase


class SessionApiTests(ApiTestCase):
    def register(self) -> str:
        answer = self.call("POST", "/sessions")
        self.assertEqual(answer.status, 200, answer.body)
        document = answer.json()
        self.assertEqual(set(document), {"session", "index"})
        self.assertEqual(answer.header("Graft-Index"), str(document["index"]))
        return str(document["session"])

    def numbered(self, path: str, data: bytes, sid: str, n: int, **extra: str) -> Answer:
        headers = {"Graft-Session": sid, "Graft-Sequence": str(n), **extra}
        return self.call("POST", path, data=data, headers=headers)

    def test_register_takes_empty_or_empty_object(self) -> None:
        self.assertNotEqual(self.register(), self.register())
        answer = self.call("POST", "/sessions", data=b"{}")
        self.assertEqual(answer.status, 200)
        refused = self.call("POST", "/sessions", data=b'{"x": 1}')
        self.assertEqual((refused.status, refused.error()["code"]), (400, "bad_request"))

    def test_resent_command_replays_status_body_and_index(self) -> None:
        """The same (session, sequence) twice: applied once; the second answer is the first
        again (status, body, Graft-Index) with Graft-Duplicate: true."""
        sid = self.register()
        first = self.numbered("/command", b"add", sid, 1)
        again = self.numbered("/command", b"add", sid, 1)
        self.assertEqual(self.backend.applied, [b"add"])
        self.assertEqual((again.status, again.body), (first.status, first.body))
        self.assertEqual(again.header("Graft-Index"), first.header("Graft-Index"))
        self.assertIsNone(first.header("Graft-Duplicate"))
        self.assertEqual(again.header("Graft-Duplicate"), "true")

    def test_a_rejection_is_replayed_as_422(self) -> None:
        self.backend.rejected.add(b"bad")
        sid = self.register()
        first = self.numbered("/command", b"bad", sid, 1)
        again = self.numbered("/command", b"bad", sid, 1)
        self.assertEqual((first.status, again.status), (422, 422))
        self.assertEqual(again.error(), first.error())
        self.assertEqual(again.header("Graft-Duplicate"), "true")

    def test_a_batch_numbers_its_commands_in_order(self) -> None:
        """/commands: the first command takes Graft-Sequence, the next ones follow; resending
        a batch that overlaps applies only the new ones."""
        sid = self.register()
        first = self.numbered("/commands", b'["a", "b"]', sid, 1)
        self.assertEqual(first.status, 200)
        overlap = self.numbered("/commands", b'["b", "c"]', sid, 2)
        self.assertEqual(self.backend.applied, [b"a", b"b", b"c"])
        entries: list[dict[str, Any]] = overlap.json()
        self.assertEqual([e.get("duplicate", False) for e in entries], [True, False])
        self.assertEqual(entries[0]["index"], first.json()[1]["index"])
        self.assertIsNone(overlap.header("Graft-Duplicate"))
        again = self.numbered("/commands", b'["b", "c"]', sid, 2)
        self.assertEqual(again.header("Graft-Duplicate"), "true")

    def test_unknown_session_is_410(self) -> None:
        answer = self.numbered("/command", b"add", "12-ab", 1)
        self.assertEqual((answer.status, answer.error()["code"]), (410, "session_expired"))
        batch = self.numbered("/commands", b'["a", "b"]', "12-ab", 1)
        self.assertEqual((batch.status, batch.error()["code"]), (410, "session_expired"))
        self.assertEqual(self.backend.applied, [])

    def test_expired_session_is_410(self) -> None:
        sid = self.register()
        self.backend.now_ns += 3601 * 10**9
        answer = self.numbered("/command", b"add", sid, 1)
        self.assertEqual(answer.status, 410)
        self.assertIn("register a new session", answer.error()["message"])

    def test_below_the_acked_floor_is_409(self) -> None:
        sid = self.register()
        self.numbered("/command", b"a", sid, 1)
        self.numbered("/command", b"b", sid, 2, **{"Graft-Acked": "2"})
        answer = self.numbered("/command", b"a", sid, 1)
        self.assertEqual((answer.status, answer.error()["code"]), (409, "sequence_forgotten"))
        self.assertEqual(self.backend.applied, [b"a", b"b"])

    def test_malformed_headers_are_400_and_propose_nothing(self) -> None:
        cases: list[dict[str, str]] = [
            {"Graft-Session": "1-ab"},
            {"Graft-Sequence": "1"},
            {"Graft-Acked": "1"},
            {"Graft-Session": "1-ab", "Graft-Sequence": "0"},
            {"Graft-Session": "1-ab", "Graft-Sequence": "-1"},
            {"Graft-Session": "1-ab", "Graft-Sequence": "x"},
            {"Graft-Session": "1-ab", "Graft-Sequence": str(2**63)},
            {"Graft-Session": "1 ab", "Graft-Sequence": "1"},
            {"Graft-Session": "a" * 65, "Graft-Sequence": "1"},
            {"Graft-Session": "1-ab", "Graft-Sequence": "1", "Graft-Acked": "0"},
            {"Graft-Session": "1-ab", "Graft-Sequence": "1", "Graft-Acked": "2"},
        ]
        for headers in cases:
            answer = self.call("POST", "/command", data=b"add", headers=headers)
            self.assertEqual((answer.status, answer.error()["code"]), (400, "bad_request"), headers)
        self.assertEqual(self.backend.submitted_operations, [])
        self.assertEqual(self.backend.submitted, [])

    def test_without_headers_nothing_changes(self) -> None:
        self.call("POST", "/command", data=b"add")
        self.call("POST", "/command", data=b"add")
        self.assertEqual(self.backend.submitted, [[b"add"], [b"add"]])
        self.assertEqual(self.backend.submitted_operations, [])


class SessionSettingsApiTests(ApiTestCase):
    def test_settings_go_through_the_log(self) -> None:
        """POST /cluster/sessions proposes a settings entry; absent keys keep their values,
        an empty body changes nothing and answers the settings."""
        answer = self.call("POST", "/cluster/sessions", data=b'{"idle_ms": 60000}')
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(
            answer.json(),
            {"idle_ms": 60000, "max_sessions": 4096, "max_results": 256, "sessions": 0},
        )
        self.assertEqual(len(self.backend.submitted_operations), 1)
        current = self.call("POST", "/cluster/sessions")
        self.assertEqual(current.json()["idle_ms"], 60000)
        self.assertEqual(self.backend.sessions.settings.idle_ns, 60 * 10**9)

    def test_bad_settings_are_400(self) -> None:
        for body in (
            b'{"idle": 5}',
            b'{"max_sessions": 0}',
            b'{"max_results": "5"}',
            b"[1]",
            b'{"idle_ms": 10}',  # the node refuses it: under a second
        ):
            answer = self.call("POST", "/cluster/sessions", data=body)
            self.assertEqual((answer.status, answer.error()["code"]), (400, "bad_request"), body)
        self.assertEqual(self.backend.sessions.settings.idle_ns, 3600 * 10**9)
