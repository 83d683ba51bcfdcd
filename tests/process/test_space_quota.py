"""The space quota on a real 3-node cluster: one client filling every replica's data dir gets
507 no_space; the cluster stays up and serves reads, and takes writes again once snapshots
have compacted the logs. Also the modes of what a real node writes."""

from __future__ import annotations

import stat
import time

from graft.testing.kv import get, put
from graft.testing.process_case import ProcessTestCase

MIB = 1 << 20
VALUE = "v" * 100_000  # each write adds about 100 KB to every replica's log


class SpaceQuotaClusterTests(ProcessTestCase):
    def test_full_data_dirs_refuse_writes_but_the_cluster_stays_up(self) -> None:
        cluster = self.make_cluster(
            extra={
                "storage": {"quota_bytes": 2 * MIB},
                # No automatic snapshot; the test takes them. Every 100 KB entry is a segment
                # of its own, and compaction keeps none below the snapshot.
                "snapshot": {"entries": 1_000_000, "trailing": 0, "segment_bytes": 4096},
            },
        )
        leader, _ = cluster.wait_for_leader(timeout=30)

        written = 0
        refused = None
        for i in range(200):
            resp = cluster.request(leader, "POST", "/command", put("k", f"{i}:{VALUE}"))
            if resp.status == 507:
                refused = resp
                break
            self.assertEqual(resp.status, 200, resp.body)
            written = i
        self.assertIsNotNone(refused, "200 writes of 100 KB never reached a 2 MiB quota")
        assert refused is not None
        error = refused.json()["error"]
        self.assertEqual(error["code"], "no_space")
        self.assertIn("storage.quota_bytes", error["message"])
        self.assertIn("snapshot", error["message"])

        # Every node is up and serves reads; a follower's write is refused the same way.
        for node in cluster.node_ids:
            self.assertIsNone(cluster.processes[node].poll(), cluster.logs(node)[-2000:])
            read = cluster.request(node, "POST", "/query?consistency=strong", get("k"))
            self.assertEqual(read.status, 200, read.body)
            self.assertTrue(read.json()["value"].startswith(f"{written}:"))
            status = cluster.status(node)
            assert status is not None
            self.assertEqual(status["space"]["quota_bytes"], 2 * MIB)
        follower = next(n for n in cluster.node_ids if n != leader)
        resp = cluster.request(follower, "POST", "/command", put("k", "small"))
        self.assertEqual(resp.status, 507, resp.body)
        self.assertEqual(resp.json()["error"]["code"], "no_space")
        metrics = cluster.request(leader, "GET", "/metrics").body.decode()
        self.assertIn("graft_space_alarm 1.0", metrics)
        self.assertIn("graft_data_dir_quota_bytes 2.097152e+06", metrics)

        # Snapshots compact every log; the alarms clear by themselves and writes go on.
        for node in cluster.node_ids:
            resp = cluster.request(node, "POST", "/cluster/snapshot", timeout=30)
            self.assertEqual(resp.status, 200, resp.body)
        deadline = time.monotonic() + 30
        while True:
            resp = cluster.request(leader, "POST", "/command", put("k", "after"))
            if resp.status == 200:
                break
            self.assertEqual(resp.status, 507, resp.body)
            self.assertLess(time.monotonic(), deadline, "writes were not accepted again")
            time.sleep(0.2)
        read = cluster.request(leader, "POST", "/query?consistency=strong", get("k"))
        self.assertEqual(read.json(), {"value": "after"})
        for node in cluster.node_ids:
            self.assertIsNone(cluster.processes[node].poll(), cluster.logs(node)[-2000:])
        self.assertIn("space alarm: the data dir", cluster.logs(leader))
        self.assertIn("space alarm cleared", cluster.logs(leader))

        # What a real node writes is its own: data dir 0700, every file in it 0600.
        for node in cluster.node_ids:
            data_dir = cluster.data_dir(node)
            self.assertEqual(stat.S_IMODE(data_dir.stat().st_mode), 0o700)
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data_dir.iterdir()}
            self.assertTrue(any(name.endswith(".seg") for name in modes), modes)
            self.assertEqual({name: 0o600 for name in modes}, modes)

    def test_a_follower_over_its_quota_stops_writes_through_the_leader(self) -> None:
        """A follower whose data dir alone is over the quota (here: a large file put there)
        tells the leader over the peer channel, and the leader refuses writes naming it; once
        the file is gone the follower says so and writes go on."""
        cluster = self.make_cluster(extra={"storage": {"quota_bytes": 2 * MIB}})
        leader, _ = cluster.wait_for_leader(timeout=30)
        follower = next(n for n in cluster.node_ids if n != leader)
        resp = cluster.request(leader, "POST", "/command", put("k", "1"))
        self.assertEqual(resp.status, 200, resp.body)
        filler = cluster.data_dir(follower) / "filler"
        filler.write_bytes(b"\0" * (3 * MIB))

        deadline = time.monotonic() + 30
        while True:
            resp = cluster.request(leader, "POST", "/command", put("k", "2"))
            if resp.status == 507:
                break
            self.assertEqual(resp.status, 200, resp.body)
            self.assertLess(time.monotonic(), deadline, "the leader never refused a write")
            time.sleep(0.2)
        self.assertIn(f"node {follower}", resp.json()["error"]["message"])
        status = cluster.status(leader)
        assert status is not None
        self.assertEqual(status["space"]["peers_over_quota"], [follower])
        self.assertFalse(status["space"]["alarm"])

        filler.unlink()
        deadline = time.monotonic() + 30
        while True:
            resp = cluster.request(leader, "POST", "/command", put("k", "3"))
            if resp.status == 200:
                break
            self.assertEqual(resp.status, 507, resp.body)
            self.assertLess(time.monotonic(), deadline, "writes were not accepted again")
            time.sleep(0.2)
