"""What the API documents, checked on real nodes: HTTPS with client certificates, the backup ->
restore round trip through the `graft` command, and the /status, /ready and /metrics
documents."""

from __future__ import annotations

import http.client
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

from graft.testing.cli import graft_cli
from graft.testing.cluster import LocalCluster, parse_metric
from graft.testing.kv import get, put
from graft.testing.process_case import ProcessTestCase

SQLITE_FSM = "graft.fsm.sqlite:SQLiteStateMachine"
# api.tls with the nodes' own certificates (graft certs makes them: 127.0.0.1 is in each), and
# the cluster CA as the only issuer of client certificates.
API_TLS = {"cert": "certs/{id}.pem", "key": "certs/{id}.key", "client_ca": "certs/ca.pem"}


class HttpsTests(ProcessTestCase):
    def test_client_certificate_required_when_client_ca_is_set(self) -> None:
        """With api.tls.client_ca the API speaks only HTTPS and only to clients presenting a
        certificate from that CA: such a client writes through a follower and reads; one
        without a certificate, or speaking plain HTTP, gets no answer."""
        cluster = self.make_cluster(extra={"api": {"tls": API_TLS}}, start=False)
        cluster.api_context = cluster.client_tls_context(cert_of="n2")
        cluster.start()
        leader, _ = cluster.wait_for_leader(timeout=30)
        follower = next(n for n in cluster.node_ids if n != leader)
        self.assertTrue(cluster.api_url(follower).startswith("https://"))
        wrote = cluster.request(follower, "POST", "/command", put("k", "over https"))
        self.assertEqual(wrote.status, 200, wrote.body)
        read = cluster.request(follower, "POST", "/query?consistency=strong", get("k"))
        self.assertEqual((read.status, read.json()), (200, {"value": "over https"}))

        without_cert = cluster.client_tls_context()
        for node in (leader, follower):
            with self.assertRaises((OSError, http.client.HTTPException)):  # ssl.SSLError is one
                answer = cluster.request(node, "GET", "/health", context=without_cert)
                self.fail(f"{node} answered a client without a certificate: {answer.status}")
        plain = f"http://127.0.0.1:{cluster.ports(leader)[1]}/health"
        with (
            self.assertRaises((OSError, http.client.HTTPException)),
            urllib.request.urlopen(plain, timeout=10) as resp,
        ):
            self.fail(f"plain HTTP answered {resp.status}")


class BackupRestoreTests(ProcessTestCase):
    def test_backup_opens_in_sqlite3_and_restores_a_new_cluster(self) -> None:
        """`graft snapshot take` + `graft snapshot save` write a backup that Python's sqlite3
        opens with the rows in it; `graft restore` of that file on every node of a new cluster
        starts it with the same rows, and it takes writes after them."""
        old = self.make_cluster(fsm=SQLITE_FSM)
        leader, _ = old.wait_for_leader(timeout=30)
        for sql in (
            b"CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
            b"INSERT INTO users (name) VALUES ('lovelace'), ('hopper'), ('turing')",
        ):
            resp = old.request(leader, "POST", "/command", sql)
            self.assertEqual(resp.status, 200, resp.body)
        took = graft_cli("snapshot", "take", "-c", str(old.config_path), cwd=old.base)
        self.assertEqual(took.returncode, 0, took.stdout + took.stderr)
        backup = Path(self.mktemp()).resolve()
        saved = graft_cli("snapshot", "save", str(backup), "-c", str(old.config_path), cwd=old.base)
        self.assertEqual(saved.returncode, 0, saved.stdout + saved.stderr)

        with sqlite3.connect(f"file:{backup}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT id, name FROM users ORDER BY id").fetchall()
        db.close()
        expected = [[1, "lovelace"], [2, "hopper"], [3, "turing"]]
        self.assertEqual([list(r) for r in rows], expected)

        new = self.make_cluster(fsm=SQLITE_FSM, start=False)
        for node in new.node_ids:
            args = ["restore", str(backup), "-c", str(new.config_path), "--node", node]
            restored = graft_cli(*args, cwd=new.base)
            self.assertEqual(restored.returncode, 0, restored.stdout + restored.stderr)
        new.start()
        leader, _ = new.wait_for_leader(timeout=30)
        query = b"SELECT id, name FROM users ORDER BY id"
        for node in new.node_ids:
            read = new.request(node, "POST", "/query?consistency=strong", query)
            self.assertEqual((read.status, read.json()["rows"]), (200, expected), node)
        wrote = new.request(leader, "POST", "/command", b"INSERT INTO users (name) VALUES ('x')")
        self.assertEqual(wrote.status, 200, wrote.body)


class StatusDocumentsTests(ProcessTestCase):
    def test_status_ready_and_metrics_of_real_nodes(self) -> None:
        """/status has the documented fields (progress only on the leader) with values that
        agree across the nodes and with /metrics; /ready is 200 on every caught-up node and 503
        with Retry-After on a node left without a leader."""
        cluster = self.make_cluster()
        leader, term = cluster.wait_for_leader(timeout=30)
        wrote = cluster.request(leader, "POST", "/command", put("k", "v"))
        self.assertEqual(wrote.status, 200, wrote.body)
        index = int(wrote.headers["Graft-Index"])
        statuses = cluster.wait_applied(index, cluster.node_ids)
        common = {
            "id", "role", "term", "leader", "leader_api", "commit", "applied", "first_index",
            "last_index", "snapshot", "members", "peers_connected", "log_bytes", "fsm_bytes",
            "certificate",
        }  # fmt: skip
        for node, status in statuses.items():
            keys = set(status) - {"last_check", "space"}
            self.assertEqual(keys, common | ({"progress"} if node == leader else set()), node)
            self.assertEqual(status["id"], node)
            self.assertEqual(status["role"], "leader" if node == leader else "follower")
            self.assertEqual((status["term"], status["leader"]), (term, leader))
            self.assertEqual(status["leader_api"], cluster.api_url(leader))
            self.assertGreaterEqual(status["commit"], index)
            self.assertGreaterEqual(status["last_index"], status["commit"])
            self.assertEqual(set(status["snapshot"]), {"index", "term"})
            self.assertEqual(
                status["members"], {"voters": ["n1", "n2", "n3"], "learners": [], "non_voters": []}
            )
            self.assertGreater(status["log_bytes"], 0)
            self.assertGreater(status["certificate"]["not_after_unix"], time.time())
        progress: Any = statuses[leader]["progress"]
        self.assertEqual(set(progress), set(cluster.node_ids))  # the leader's own entry too
        for peer in progress.values():
            self.assertEqual(set(peer), {"match", "next", "state", "lag", "active"})

        for node in cluster.node_ids:
            ready = cluster.request(node, "GET", "/ready")
            self.assertEqual(ready.status, 200, ready.body)
            self.assertEqual(ready.json(), {"ready": True, "node": node, "leader": leader})
            page = cluster.request(node, "GET", "/metrics")
            self.assertEqual(page.status, 200)
            self.assertTrue(page.headers["Content-Type"].startswith("text/plain"), page.headers)
            text = page.body.decode()
            self.assertEqual(parse_metric(text, "graft_is_leader"), float(node == leader))
            self.assertGreaterEqual(parse_metric(text, "graft_term"), term)
            self.assertGreaterEqual(parse_metric(text, "graft_applied_index"), index)

        # Alone, a follower loses its leader (the leader steps down without a quorum too).
        alone = next(n for n in cluster.node_ids if n != leader)
        for node in cluster.node_ids:
            if node != alone:
                cluster.kill(node)
        self.wait_for_unready(cluster, alone)

    def wait_for_unready(self, cluster: LocalCluster, node: str) -> None:
        deadline = time.monotonic() + 60
        while True:
            answer = cluster.request(node, "GET", "/ready")
            if answer.status == 503:
                break
            self.assertEqual(answer.status, 200, answer.body)
            self.assertLess(time.monotonic(), deadline, "the lone node stayed ready")
            time.sleep(0.05)
        self.assertEqual(answer.json(), {"ready": False, "node": node, "leader": None})
        self.assertIn("Retry-After", answer.headers)
