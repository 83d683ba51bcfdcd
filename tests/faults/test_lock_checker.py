"""The lock workload's checker (graft.testing.faults.lock_checker) on hand-made histories: a
clean one with a fenced overlap passes; each rule, broken once, is named. And the guarded
resource's own decisions (lock_resource)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

from twisted.trial import unittest

from graft.testing.faults.lock_checker import (
    ERROR,
    OK,
    REFUSED,
    LockRecord,
    ResourceWrite,
    check_final_token,
    check_lock_history,
    check_resource,
)
from graft.testing.faults.lock_resource import GuardedResource


def rec(client: str, kind: str, invoke: float, complete: float, **kw: Any) -> LockRecord:
    return LockRecord(
        client=client, node=client[:2], kind=kind, invoke=invoke, complete=complete, **kw
    )


def acquire(client: str, at: float, token: int, index: int) -> LockRecord:
    return rec(client, "acquire", at - 0.1, at, outcome=OK, granted=True, token=token, index=index)


# a holds token 1 and releases; b holds token 2, stalls past its lease; c gets token 3 and
# writes; b wakes up and writes with token 2: fenced. One refused acquire, one unknown one.
CLEAN = [
    acquire("n1-c0", 0.1, 1, 10),
    rec("n1-c0", "write", 0.2, 0.3, outcome=OK, token=1),
    rec("n1-c0", "release", 0.4, 0.5, outcome=OK, token=1),
    rec("n2-c0", "acquire", 0.3, 0.35, outcome=OK, granted=False, index=11),
    acquire("n2-c0", 0.6, 2, 12),
    rec("n3-c0", "acquire", 0.7, 2.7, outcome=ERROR, error="Timeout"),
    acquire("n3-c0", 1.1, 3, 14),
    rec("n3-c0", "write", 1.2, 1.3, outcome=OK, token=3),
    rec("n2-c0", "write", 2.0, 2.1, outcome=REFUSED, token=2),
    rec("n3-c0", "release", 1.4, 1.5, outcome=OK, token=3),
]
RESOURCE = [
    ResourceWrite(t=0.25, client="n1-c0", token=1, accepted=True, newest=0),
    ResourceWrite(t=1.25, client="n3-c0", token=3, accepted=True, newest=1),
    ResourceWrite(t=2.05, client="n2-c0", token=2, accepted=False, newest=3),
]


def kinds(records: list[LockRecord], writes: list[ResourceWrite] = RESOURCE) -> list[str]:
    anomalies, _ = check_lock_history(records, writes)
    return sorted({a.kind for a in anomalies})


class LockCheckerTests(unittest.SynchronousTestCase):
    def test_clean_history_with_a_fenced_overlap(self) -> None:
        """Overlapping holds are no anomaly when the older holder's late write was fenced;
        the counts name the grants, writes and the overlap."""
        anomalies, counts = check_lock_history(CLEAN, RESOURCE)
        self.assertEqual(anomalies, [])
        self.assertEqual(
            {k: counts[k] for k in ("grants", "acquires", "acquire_errors", "overlaps")},
            {"grants": 3, "acquires": 5, "acquire_errors": 1, "overlaps": 1},
        )
        self.assertEqual((counts["overlaps_fenced"], counts["writes_fenced"]), (1, 1))
        self.assertEqual(check_final_token(CLEAN, 3, at=5.0), [])

    def test_a_token_granted_twice(self) -> None:
        """Rule 1: two grants with one token (here c's grant repeats b's token 2)."""
        bad = [replace(r, token=2) if r.kind == "acquire" and r.token == 3 else r for r in CLEAN]
        bad = [r for r in bad if not (r.client == "n3-c0" and r.kind != "acquire")]
        self.assertIn("duplicate_token", kinds(bad))

    def test_one_log_index_with_two_tokens(self) -> None:
        """Rule 1: one log entry cannot answer two grants with different tokens."""
        bad = [*CLEAN, acquire("n1-c1", 3.0, 4, 14)]
        self.assertEqual(kinds(bad), ["duplicate_token"])

    def test_tokens_going_back_in_log_order(self) -> None:
        """Rule 2: the grant later in the log (index 14) carries an older token than the one
        before it (index 12)."""
        bad = [replace(r, index=9) if r.kind == "acquire" and r.token == 3 else r for r in CLEAN]
        self.assertEqual(kinds(bad), ["token_order"])

    def test_resource_accepting_an_older_token(self) -> None:
        """Rule 3: the resource took token 2 after it had taken token 3."""
        bad = [*RESOURCE[:2], replace(RESOURCE[2], accepted=True)]
        self.assertEqual(kinds(CLEAN, bad), ["stale_write_accepted"])

    def test_older_holder_not_fenced(self) -> None:
        """Rule 4: b's write with token 2 started after c's write with token 3 was accepted,
        and it was accepted too."""
        bad = [replace(r, outcome=OK) if r.kind == "write" and r.token == 2 else r for r in CLEAN]
        self.assertEqual(kinds(bad), ["unfenced_overlap"])

    def test_older_holder_writing_before_the_newer_one_is_fine(self) -> None:
        """An older holder's write accepted before the newer holder wrote anything keeps the
        resource's order: no anomaly, though the holds overlap."""
        early = [
            replace(r, invoke=1.15, complete=1.18, outcome=OK)
            if r.kind == "write" and r.token == 2
            else r
            for r in CLEAN
        ]
        anomalies, counts = check_lock_history(early, RESOURCE)
        self.assertEqual((anomalies, counts["overlaps"]), ([], 1))

    def test_grant_beyond_the_final_token(self) -> None:
        """A grant the final state does not know of (its token is past the last one)."""
        self.assertEqual(
            [a.kind for a in check_final_token(CLEAN, 2, at=5.0)], ["token_beyond_final"]
        )


class GuardedResourceTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = iter(range(100))
        self.resource = GuardedResource(lambda: float(next(self.clock)))
        self.resource.start()
        self.addCleanup(self.resource.stop)

    def post(self, token: Any) -> tuple[int, Any]:
        body = json.dumps({"client": "c", "token": token, "key": "k", "value": "v"}).encode()
        url = f"http://{self.resource.address}/write"
        try:
            with urllib.request.urlopen(url, data=body, timeout=5) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def test_fences_older_tokens_and_logs_every_decision(self) -> None:
        self.assertEqual(self.post(2), (200, {"accepted": True, "newest": 2}))
        self.assertEqual(self.post(2)[0], 200)  # the same holder writing again
        self.assertEqual(self.post(1), (409, {"accepted": False, "newest": 2}))
        self.assertEqual(self.post(3)[0], 200)
        self.assertEqual(self.post("x")[0], 400)
        log = self.resource.decisions()
        self.assertEqual([(w.token, w.accepted) for w in log], [(2, 1), (2, 1), (1, 0), (3, 1)])
        self.assertEqual(check_resource(log), [])
