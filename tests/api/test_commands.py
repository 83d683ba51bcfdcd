"""POST /command and POST /commands against a FakeBackend, in memory."""

from __future__ import annotations

import base64
import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from graft.api.batch import batch_body
from graft.driver.port import CommandResult, make_command_result
from graft.errors import NoLeader, Timeout
from tests.api.fakes import ApiTestCase, Settings


class CommandTests(ApiTestCase):
    def test_seed_curl_shape(self) -> None:
        """The seed's `curl -X POST -H 'Content-Type: text/plain' --data @conf/demo.sql
        .../command/` submits the script as-is and answers the FSM output with its headers."""
        script = b"CREATE TABLE users (name TEXT);\nINSERT INTO users VALUES ('turing');"
        answer = self.call("POST", "/command/", data=script, headers={"Content-Type": "text/plain"})
        self.assertEqual(answer.status, 200)
        self.assertEqual(self.backend.submitted, [[script]])
        self.assertEqual(answer.body, self.backend.output_for(script))
        self.assertEqual(answer.header("Content-Type"), "application/json")
        self.assertEqual(answer.header("Graft-Index"), "10")
        self.assertEqual(answer.header("Graft-Term"), "3")
        self.assertEqual(answer.header("Graft-Leader"), "turing")
        self.assertEqual(answer.length, len(answer.body))

    def test_without_trailing_slash(self) -> None:
        """/command works as well as /command/."""
        answer = self.call("POST", "/command", data=b"x=1")
        self.assertEqual(answer.status, 200)
        self.assertEqual(self.backend.submitted, [[b"x=1"]])

    def test_output_is_not_rewrapped(self) -> None:
        """The FSM's output is the body byte for byte, with the FSM's content type."""
        self.backend = type(self.backend)(content_type="application/octet-stream")
        self.serve(Settings())
        self.backend.output_for = lambda command: b"\x00\xffraw"
        answer = self.call("POST", "/command", data=b"go")
        self.assertEqual(answer.body, b"\x00\xffraw")
        self.assertEqual(answer.header("Content-Type"), "application/octet-stream")

    def test_base64_body(self) -> None:
        """?encoding=base64 decodes the body (line breaks allowed) before submitting it."""
        command = bytes(range(256))
        encoded = base64.encodebytes(command)  # with line breaks every 76 characters
        answer = self.call("POST", "/command?encoding=base64", data=encoded)
        self.assertEqual(answer.status, 200)
        self.assertEqual(self.backend.submitted, [[command]])

    def test_bad_base64(self) -> None:
        """Bad base64 is 400 bad_request and nothing is submitted."""
        for body in (b"not base64!", b"YWJj=", b"YWJjZA"):
            answer = self.call("POST", "/command?encoding=base64", data=body)
            self.assertError(answer, 400, "bad_request")
        self.assertEqual(self.backend.submitted, [])

    def test_unknown_encoding(self) -> None:
        """An encoding other than base64 is 400 and nothing is submitted."""
        answer = self.call("POST", "/command?encoding=hex", data=b"00")
        self.assertIn("encoding", self.assertError(answer, 400, "bad_request")["message"])
        self.assertEqual(self.backend.submitted, [])

    def test_empty_command(self) -> None:
        """An empty body is 400: an empty entry would be indistinguishable from a no-op."""
        answer = self.call("POST", "/command", data=b"")
        self.assertError(answer, 400, "bad_request")
        self.assertEqual(self.backend.submitted, [])

    def test_fsm_rejection(self) -> None:
        """A command the FSM refuses is 422 fsm_error carrying its index and term."""
        self.backend.rejected.add(b"DROP TABLE nope")
        answer = self.call("POST", "/command", data=b"DROP TABLE nope")
        detail = self.assertError(answer, 422, "fsm_error")
        self.assertEqual(detail["index"], 10)
        self.assertEqual(detail["term"], 3)
        self.assertEqual(detail["message"], "rejected b'DROP TABLE nope'")
        self.assertEqual(answer.header("Graft-Index"), "10")

    def test_no_leader(self) -> None:
        """NoLeader from the backend is 503 no_leader with Retry-After in whole seconds."""
        self.backend.failure = NoLeader("no leader: retry", retry_after=0.3)
        answer = self.call("POST", "/command", data=b"x")
        self.assertError(answer, 503, "no_leader")
        self.assertEqual(answer.header("Retry-After"), "1")

    def test_api_deadline(self) -> None:
        """A command not applied within command_timeout_ms is 504 timeout saying the outcome
        is unknown; the backend's late answer is then ignored."""
        self.serve(Settings(command_timeout_ms=2000))
        self.backend.hold_commands = True
        pending = self.start("POST", "/command", data=b"slow")
        self.clock.advance(1.9)
        self.assertNoResult(pending)
        self.clock.advance(0.2)
        detail = self.assertError(self.finish(pending), 504, "timeout")
        self.assertEqual(detail["message"].count("outcome is unknown"), 1, detail["message"])
        self.assertIn("may still commit", detail["message"])
        (late,) = self.backend.pending_commands
        late.callback(self.backend.results_for([b"slow"]))  # must not raise AlreadyCalled
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backend_timeout(self) -> None:
        """A Timeout raised by the backend also says the command's outcome is unknown."""
        self.backend.failure = Timeout("forwarding to ritchie timed out")
        detail = self.assertError(self.call("POST", "/command", data=b"x"), 504, "timeout")
        self.assertIn("forwarding to ritchie timed out", detail["message"])
        self.assertIn("may still commit", detail["message"])

    def test_answer_before_deadline_cancels_timer(self) -> None:
        """A command answered in time leaves no timer behind."""
        self.backend.hold_commands = True
        pending = self.start("POST", "/command", data=b"x")
        (held,) = self.backend.pending_commands
        held.callback(self.backend.results_for([b"x"]))
        self.assertEqual(self.finish(pending).status, 200)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_internal_error_hidden_and_logged(self) -> None:
        """An unexpected exception is 500 internal, logged with its traceback, and nothing of
        it reaches the client."""
        self.backend.failure = ZeroDivisionError("secret detail")
        answer = self.call("POST", "/command", data=b"x")
        self.assertError(answer, 500, "internal")
        self.assertNotIn(b"secret detail", answer.body)
        self.assertNotIn(b"ZeroDivisionError", answer.body)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_wrong_result_count_is_internal(self) -> None:
        """A backend answering the wrong number of results is a bug: 500 internal, logged."""
        self.backend.results_for = lambda commands: []  # type: ignore[method-assign]
        self.assertError(self.call("POST", "/command", data=b"x"), 500, "internal")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class RedirectTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.backend = type(self.backend)(node_id="turing", leader="ritchie")
        self.serve(Settings())

    def test_redirect_to_leader(self) -> None:
        """?redirect=true on a follower answers 307 with an absolute Location on the leader's
        API (same path and query) and Graft-Leader, submitting nothing."""
        answer = self.call(
            "POST",
            "/command/?redirect=true&encoding=base64",
            data=b"eA==",
            allow_redirects=False,
        )
        self.assertEqual(answer.status, 307)
        location = "http://127.0.0.1:8081/command/?redirect=true&encoding=base64"
        self.assertEqual(answer.header("Location"), location)
        self.assertEqual(answer.header("Graft-Leader"), "ritchie")
        self.assertEqual(answer.json(), {"leader": "ritchie", "location": location})
        self.assertEqual(self.backend.submitted, [])

    def test_redirect_base_with_path_slash(self) -> None:
        """A leader API URL ending in / does not produce a double slash."""
        self.backend.leader = "lovelace"
        answer = self.call("POST", "/commands?redirect=1", data=b'["x"]', allow_redirects=False)
        self.assertEqual(answer.status, 307)
        self.assertEqual(answer.header("Location"), "https://10.0.0.3:8082/commands?redirect=1")

    def test_follower_forwards_without_redirect(self) -> None:
        """Without ?redirect a follower hands the command to the backend (which forwards)."""
        answer = self.call("POST", "/command?redirect=false", data=b"x")
        self.assertEqual(answer.status, 200)
        self.assertEqual(self.backend.submitted, [[b"x"]])

    def test_leader_serves_redirect_requests(self) -> None:
        """On the leader ?redirect=true is served normally."""
        self.backend.leader = "turing"
        answer = self.call("POST", "/command?redirect=true", data=b"x")
        self.assertEqual(answer.status, 200)

    def test_redirect_without_leader(self) -> None:
        """?redirect=true with no known leader is 503 no_leader with Retry-After."""
        self.backend.leader = None
        answer = self.call("POST", "/command?redirect=true", data=b"x")
        self.assertError(answer, 503, "no_leader")
        self.assertEqual(answer.header("Retry-After"), "1")

    def test_redirect_leader_without_address(self) -> None:
        """A leader with no known API address is 503 no_leader."""
        self.backend.leader = "hamilton"
        self.assertError(self.call("POST", "/command?redirect=true", data=b"x"), 503, "no_leader")

    def test_bad_redirect_flag(self) -> None:
        """A redirect value that is not a boolean is 400."""
        self.assertError(
            self.call("POST", "/command?redirect=maybe", data=b"x"), 400, "bad_request"
        )


class BatchTests(ApiTestCase):
    def test_batch_results_in_order(self) -> None:
        """Strings and {"b64"} elements become one submission, answered in order with index,
        term and the JSON-decoded result; an FSM refusal is an error entry in its place."""
        self.backend.rejected.add(b"bad")
        body = json.dumps(["one", {"b64": base64.b64encode(b"\x00two").decode()}, "bad"])
        answer = self.call("POST", "/commands", data=body.encode())
        self.assertEqual(answer.status, 200)
        self.assertEqual(self.backend.submitted, [[b"one", b"\x00two", b"bad"]])
        self.assertEqual(
            answer.json(),
            [
                {"index": 10, "term": 3, "result": {"applied": "one"}},
                {"index": 11, "term": 3, "result": {"applied": "\x00two"}},
                {
                    "index": 12,
                    "term": 3,
                    "error": {"code": "fsm_error", "message": "rejected b'bad'"},
                },
            ],
        )
        self.assertEqual(answer.header("Graft-Index"), "12")
        self.assertEqual(answer.header("Graft-Leader"), "turing")

    def test_non_json_output_is_base64(self) -> None:
        """With a non-JSON content type each result is base64 and says so."""
        self.backend = type(self.backend)(content_type="application/octet-stream")
        self.serve(Settings())
        self.backend.output_for = lambda command: b"\xff" + command
        answer = self.call("POST", "/commands", data=b'["a"]')
        (entry,) = answer.json()
        self.assertEqual(entry["encoding"], "base64")
        self.assertEqual(base64.b64decode(entry["result"]), b"\xffa")

    def test_unparsable_json_output_falls_back_to_base64(self) -> None:
        """A JSON FSM whose output does not parse still gets its result back, as base64."""
        self.backend.output_for = lambda command: b"not json"
        (entry,) = self.call("POST", "/commands", data=b'["a"]').json()
        self.assertEqual(
            entry, {"index": 10, "term": 3, "result": "bm90IGpzb24=", "encoding": "base64"}
        )

    def test_json_outputs_parsed_as_json_loads_would(self) -> None:
        """Each result is the output as json.loads reads it (whitespace around allowed, NaN
        too), or base64 when json.loads refuses it (trailing data, bad UTF-8, a BOM, nothing);
        the body is the compact, ASCII-escaped JSON of those entries."""
        outputs = [
            b'{"prev":"x"}',
            b' {"a": [1, 2.5, null]}\n',
            b'"\xc3\xa9\\u2603"',
            b"NaN",
            b"1 2",
            b'{"a":1}x',
            b"\xff",
            b"\xef\xbb\xbf{}",
            b"[1,",
            b"",
            b" ",
        ]
        self.backend.output_for = lambda command: outputs[int(command)]
        body = json.dumps([str(i) for i in range(len(outputs))]).encode()
        answer = self.call("POST", "/commands", data=body)
        expected: list[dict[str, object]] = []
        for index, output in enumerate(outputs, start=10):
            entry: dict[str, object] = {"index": index, "term": 3}
            try:
                entry["result"] = json.loads(output.decode("utf-8"))
            except ValueError:
                entry["result"] = base64.b64encode(output).decode("ascii")
                entry["encoding"] = "base64"
            expected.append(entry)
        self.assertEqual(answer.body, json.dumps(expected, separators=(",", ":")).encode() + b"\n")
        self.assertEqual([("encoding" in e) for e in answer.json()], [False] * 4 + [True] * 7)

    def test_malformed_batches(self) -> None:
        """Malformed JSON, a non-array, an empty array, a wrong element, bad base64 and an
        empty command are each 400 and nothing is submitted."""
        bodies = [
            b'["unterminated',
            b"\xff\xfe",
            b'{"b64": "eA=="}',
            b"[]",
            b'["ok", 7]',
            b'["ok", {"b64": "eA==", "extra": 1}]',
            b'[{"b64": 5}]',
            b'[{"b64": "!!"}]',
            b'["ok", ""]',
            b'["\\ud800"]',
        ]
        for body in bodies:
            answer = self.call("POST", "/commands", data=body)
            self.assertError(answer, 400, "bad_request")
        self.assertEqual(self.backend.submitted, [])

    def test_element_position_in_message(self) -> None:
        """The 400 for a wrong element names its position."""
        answer = self.call("POST", "/commands", data=b'["ok", "ok", null]')
        self.assertIn("element 2", self.assertError(answer, 400, "bad_request")["message"])

    def test_batch_timeout(self) -> None:
        """A batch not applied in time is 504 timeout."""
        self.backend.hold_commands = True
        pending = self.start("POST", "/commands", data=b'["a", "b"]')
        self.clock.advance(5.0)
        detail = self.assertError(self.finish(pending), 504, "timeout")
        self.assertIn("may still commit", detail["message"])

    def test_fsm_error_entry_shape(self) -> None:
        """An all-refused batch is still 200: the refusals are per-command results."""
        self.backend.rejected.update({b"a", b"b"})
        answer = self.call("POST", "/commands", data=b'["a", "b"]')
        self.assertEqual(answer.status, 200)
        self.assertEqual([sorted(e) for e in answer.json()], [["error", "index", "term"]] * 2)


class MakeCommandResultTests(SynchronousTestCase):
    def test_same_as_the_constructor(self) -> None:
        """make_command_result builds what CommandResult(...) builds, frozen, for every field
        CommandResult has (a field added without make_command_result fails here)."""
        names = [f.name for f in dataclasses.fields(CommandResult)]
        self.assertEqual(
            names, ["index", "term", "leader", "output", "error", "refusal", "duplicate"]
        )
        for error in (None, "refused"):
            made = make_command_result(4, 2, "turing", b"{}", error)
            self.assertIs(type(made), CommandResult)
            expected = CommandResult(index=4, term=2, leader="turing", output=b"{}", error=error)
            self.assertEqual(made, expected)
            self.assertRaises(dataclasses.FrozenInstanceError, setattr, made, "index", 5)


class ResultTypeTests(ApiTestCase):
    def test_command_result_fields_reach_headers(self) -> None:
        """Graft-Leader comes from the CommandResult, not from this node's view."""
        self.backend.results_for = lambda commands: [  # type: ignore[method-assign]
            CommandResult(index=99, term=7, leader="lovelace", output=b"{}")
        ]
        answer = self.call("POST", "/command", data=b"x")
        self.assertEqual(
            (
                answer.header("Graft-Index"),
                answer.header("Graft-Term"),
                answer.header("Graft-Leader"),
            ),
            ("99", "7", "lovelace"),
        )


def reference_body(results: list[CommandResult], as_json: bool) -> bytes:
    """A batch's answer as json.loads and json.dumps make it: the contract batch_body keeps."""
    entries: list[dict[str, object]] = []
    for r in results:
        entry: dict[str, object] = {"index": r.index, "term": r.term}
        if r.error is not None:
            entry["error"] = {"code": "fsm_error", "message": r.error}
        else:
            try:
                if not as_json:
                    raise ValueError
                entry["result"] = json.loads(r.output.decode("utf-8"))
            except ValueError:
                entry["result"] = base64.b64encode(r.output).decode("ascii")
                entry["encoding"] = "base64"
        entries.append(entry)
    return json.dumps(entries, separators=(",", ":")).encode("ascii") + b"\n"


_TEXTS = st.text(st.sampled_from('ab "\\/\x00\n\x7f\u00e9\u2028~'), max_size=4)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**17), 10**17),
    st.sampled_from([0.5, 1e20, -0.0, float("nan")]),
    _TEXTS,
)
_MEMBER = st.tuples(st.sampled_from(["prev", "ok", "value", "a", "\u00e9", "x\\y"]), _SCALARS)


@st.composite
def _outputs(draw: st.DrawFn) -> bytes:
    """FSM outputs: small objects (keys repeated now and then), written compactly or not,
    escaped or not, valid or cut short, or any bytes at all."""
    members = draw(st.lists(_MEMBER, max_size=3))
    style = draw(st.sampled_from(["compact", "compact-unicode", "spaced", "raw"]))
    if style == "raw":
        return draw(st.binary(max_size=12))
    ascii_only = style != "compact-unicode"
    separators = (", ", ": ") if style == "spaced" else (",", ":")
    pieces = [json.dumps(item, ensure_ascii=ascii_only) for member in members for item in member]
    pairs = [separators[1].join(pieces[i : i + 2]) for i in range(0, len(pieces), 2)]
    text = "{" + separators[0].join(pairs) + "}"
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode("utf-8", errors="surrogatepass")


class BatchBodyTests(SynchronousTestCase):
    @settings(max_examples=1500, deadline=None)
    @given(
        st.lists(st.tuples(_outputs(), st.one_of(st.none(), _TEXTS)), min_size=1, max_size=5),
        st.booleans(),
    )
    def test_same_bytes_as_json_loads_and_dumps(
        self, outputs: list[tuple[bytes, str | None]], as_json: bool
    ) -> None:
        """A batch's answer is byte for byte json.dumps of the entries json.loads makes of the
        outputs, whether an output is copied as it is or parsed and encoded again."""
        results = [
            CommandResult(index=7 + i, term=2, leader="turing", output=o, error=e)
            for i, (o, e) in enumerate(outputs)
        ]
        self.assertEqual(batch_body(results, as_json), reference_body(results, as_json))

    def test_runs_of_the_same_output(self) -> None:
        """Consecutive results with the same output share their entry's tail: a change of
        term, of output, an error or an output that is not copied in the middle of a run
        each give the reference's entry."""
        null, old, spaced = b'{"prev":null}', b'{"prev":"x"}', b'{"prev": null}'
        steps: list[tuple[bytes, int, str | None]] = [
            (null, 2, None),
            (null, 2, None),
            (null, 3, None),  # a new term, the same output
            (null, 3, None),
            (old, 3, None),
            (null, 3, "refused"),  # an error in a run
            (null, 3, None),
            (spaced, 3, None),  # parsed and encoded again
            (spaced, 3, None),
            (null, 3, None),
            (null, 2, None),  # back to an earlier term
        ]
        results = [
            CommandResult(index=40 + i, term=t, leader="turing", output=o, error=e)
            for i, (o, t, e) in enumerate(steps)
        ]
        for as_json in (True, False):
            self.assertEqual(batch_body(results, as_json), reference_body(results, as_json))

    def test_edge_cases(self) -> None:
        """Outputs on either side of what is copied as it is: the answer is the reference's."""
        outputs = [
            b'{"prev":null}',
            b'{"prev":"x y~!#[]"}',
            b'{"ok":true,"value":"1"}',
            b'{"ok":false,"value":null}',
            b'{"a":1,"a":2}',
            b'{"a":-0}',
            b'{"a":-12,"b":0}',
            b'{"a":01}',
            b'{"a":1.0}',
            b'{"a":1e3}',
            b'{"a":12345678901234567890}',
            b'{"a":"\x7f"}',
            b'{"a":"\\n"}',
            b'{"a":"\\u00e9"}',
            b'{"\xc3\xa9":"x"}',
            b'{"a":"b","c":"d","e":"f"}',
            b'{"a":"b"} ',
            b"{}",
            b'{"a":"b"',
            b'"x"',
        ]
        results = [
            CommandResult(index=i, term=1, leader="turing", output=o) for i, o in enumerate(outputs)
        ]
        for as_json in (True, False):
            self.assertEqual(batch_body(results, as_json), reference_body(results, as_json))
