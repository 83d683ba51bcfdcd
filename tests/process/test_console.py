"""The web console in a real browser: headless Chromium (graft.testing.chromium, over the
DevTools protocol) loads /ui from a follower of a real 3-node SQLite cluster, sees the members
and the leader, follows a leader SIGKILL, and runs a command and a query typed in the console.

Skips, saying why, only when Chromium is not installed (``make test`` and ``.ci/run`` install
Debian's ``chromium`` first when they can)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from graft.api.auth import token_digest
from graft.testing.chromium import Chromium, chromium_binary
from graft.testing.cli import graft_cli
from graft.testing.cluster import LocalCluster, free_ports

# What the page shows: one entry per member row of the cluster view.
MEMBERS_JS = """JSON.stringify([...document.querySelectorAll('#members tr[data-member]')].map(
  (r) => ({id: r.dataset.member, role: r.dataset.role, reachable: r.dataset.reachable,
           leader: r.classList.contains('leader')})))"""
RESULT_JS = """JSON.stringify({
  columns: [...document.querySelectorAll('#result-table th')].map((c) => c.dataset.column),
  types: [...document.querySelectorAll('#result-table th')].map((c) => c.dataset.type),
  rows: [...document.querySelectorAll('#result-table tbody tr')].map(
    (r) => [...r.children].map((c) => c.textContent)),
  error: document.getElementById('query-error').hidden ? null
         : document.getElementById('query-error').textContent,
  meta: document.getElementById('query-meta').textContent,
  note: (document.querySelector('#result p') || {}).textContent || null})"""
TIMELINE_JS = """JSON.stringify([...document.querySelectorAll('#timeline li')].map(
  (li) => ({kind: li.dataset.kind, leader: li.dataset.leader, text: li.textContent})))"""
LATENCY_POINTS_JS = """(document.querySelector('#latency-chart polyline.p50')
  || {getAttribute: () => ''}).getAttribute('points')"""


class ConsoleInBrowserTests(unittest.TestCase):
    def setUp(self) -> None:
        if chromium_binary() is None:
            if os.environ.get("GRAFT_REQUIRE_BROWSER"):  # .ci/run: it must run there
                self.fail("chromium is not installed, and GRAFT_REQUIRE_BROWSER is set")
            raise unittest.SkipTest(
                "chromium is not installed and could not be installed here (make test runs "
                "`apt-get install -y -qq chromium` as root first): the console's browser test "
                "did not run"
            )
        self.base = Path(self.mktemp())

    def launch(self, tokens: dict[str, str] | None = None) -> None:
        """A 3-node SQLite cluster (with these role: token pairs, if any) holding a table,
        and a browser; ``self.node`` is a follower, whose console the test opens."""
        extra = {}
        if tokens:
            digests = {role: [token_digest(token)] for role, token in tokens.items()}
            extra = {"api": {"tokens": digests}}
        self.cluster = LocalCluster(
            self.base / "cluster",
            fsm="graft.fsm.sqlite:SQLiteStateMachine",
            extra=extra,
            status_token=(tokens or {}).get("read"),
        )
        self.addCleanup(self.cluster.close)
        self.cluster.start()
        self.leader, self.term = self.cluster.wait_for_leader(timeout=20)
        # The page is served by a follower, which outlives the leader's kill.
        self.node = next(n for n in self.cluster.node_ids if n != self.leader)
        auth = {"Authorization": f"Bearer {tokens['write']}"} if tokens else {}
        created = self.cluster.request(
            self.leader,
            "POST",
            "/command",
            b"CREATE TABLE fruit (name TEXT, n INTEGER); INSERT INTO fruit VALUES ('apple', 3);",
            headers=auth,
        )
        self.assertEqual(created.status, 200, created.body)
        self.browser = Chromium(self.base / "browser")
        self.addCleanup(self.browser.close)
        self.shots = self.base

    def open_console(self) -> None:
        self.browser.navigate(self.cluster.api_url(self.node) + "/ui")
        self.wait_for(
            lambda: self.browser.evaluate(
                "location.pathname === '/ui' && document.readyState === 'complete'"
            ),
            "the console loaded",
        )

    def members(self) -> list[dict[str, Any]]:
        shown: list[dict[str, Any]] = json.loads(self.browser.evaluate(MEMBERS_JS))
        return shown

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        """Poll the page until ``condition()`` is truthy; fail with what the page showed."""
        give_up = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > give_up:
                self.browser.screenshot(self.shots / "failed.png")
                self.fail(f"the page did not show {what}; members shown: {self.members()}")
            time.sleep(0.1)

    def leaders_shown(self) -> list[str]:
        return [m["id"] for m in self.members() if m["role"] == "leader"]

    def run_in_console(
        self, text: str, button: str, *, params: str = "", form: str = "sql"
    ) -> dict[str, Any]:
        """Type ``text`` into the editor (with ``params`` in the parameters box, in the
        ``form`` chosen), press ``button`` and wait for the answer shown."""
        self.browser.evaluate(
            f"document.getElementById('params').value = {json.dumps(params)}; "
            f"document.getElementById('form').value = {json.dumps(form)}; "
            "document.getElementById('sql').value = ''; "
            "document.getElementById('result').replaceChildren(); "
            "document.getElementById('query-meta').textContent = ''; "
            "document.getElementById('sql').focus()"
        )
        self.browser.insert_text(text)
        self.browser.evaluate(f"document.getElementById({json.dumps(button)}).click()")

        def answered() -> dict[str, Any] | None:
            shown: dict[str, Any] = json.loads(self.browser.evaluate(RESULT_JS))
            meta = shown["meta"]
            return shown if meta and not meta.startswith("running") else None

        shown: dict[str, Any] = self.wait_for(answered, f"an answer to {text!r}")
        return shown

    def settle(self) -> None:
        """Wait until the page shows three reachable members and one leader, the one the
        cluster reports too, and set ``self.leader`` and ``self.term`` to it: on a loaded
        machine the first leader may lose an election before the page is up. The console
        stays on a follower, so that it outlives the leader's kill."""

        def agreed() -> tuple[str, int] | None:
            members = self.members()
            if len(members) != 3 or any(m["reachable"] != "true" for m in members):
                return None
            shown = self.leaders_shown()
            leader, term = self.cluster.wait_for_leader(timeout=20)
            return (leader, term) if shown == [leader] else None

        self.leader, self.term = self.wait_for(
            agreed, "three reachable members and exactly one leader"
        )
        if self.leader == self.node:
            self.node = next(n for n in self.cluster.node_ids if n != self.leader)
            self.open_console()
            self.settle()

    def test_console_follows_a_leader_kill_and_runs_queries(self) -> None:
        self.launch()
        self.open_console()
        self.settle()
        leader_row = next(m for m in self.members() if m["id"] == self.leader)
        self.assertTrue(leader_row["leader"], "the leader's row is highlighted")

        self.cluster.kill(self.leader)
        self.wait_for(
            lambda: (
                len(self.leaders_shown()) == 1
                and self.leaders_shown()[0] != self.leader
                and {
                    "id": self.leader,
                    "role": "unreachable",
                    "reachable": "false",
                    "leader": False,
                }
                in self.members()
            ),
            "a new leader and the killed one unreachable",
        )
        banner = self.browser.evaluate("document.getElementById('banner').textContent")
        self.assertIn(f"{self.leader} is unreachable", banner)
        timeline = json.loads(self.browser.evaluate(TIMELINE_JS))
        leaders = [entry["leader"] for entry in timeline if entry["kind"] == "leader"]
        self.assertIn(self.leader, leaders, "the killed leader is in the timeline")
        self.assertEqual(leaders[0], self.leaders_shown()[0], "which ends with the new one")
        elections = [entry["text"] for entry in timeline if entry["kind"] == "election"]
        self.assertTrue(
            any(f"term {self.term} → " in text for text in elections),
            f"the election after the kill is in the timeline: {timeline}",
        )

        # The SQL form: a bound parameter, typed columns, the statement's own error.
        inserted = self.run_in_console(
            "INSERT INTO fruit VALUES (?, ?)", "run-command", params='["pear", 5]'
        )
        self.assertIsNone(inserted["error"], inserted)
        self.assertIn("1 row(s) affected", inserted["note"])
        self.browser.evaluate("document.getElementById('consistency').value = 'strong'")
        shown = self.run_in_console(
            "SELECT name, n FROM fruit WHERE n >= :least ORDER BY n",
            "run-query",
            params='{"least": 3}',
        )
        self.assertIsNone(shown["error"], shown)
        self.assertEqual(shown["columns"], ["name", "n"])
        self.assertEqual(shown["types"], ["TEXT", "INTEGER"])
        self.assertEqual(shown["rows"], [["apple", "3"], ["pear", "5"]])

        refused = self.run_in_console("DELETE FROM fruit", "run-query")
        self.assertIsNotNone(refused["error"], "a write sent as a query is refused")
        self.assertIn("the statement failed", refused["error"])
        # The raw form: the body as typed, for any state machine; SQL text answers untyped.
        raw = self.run_in_console("SELECT count(*) AS c FROM fruit", "run-query", form="raw")
        self.assertEqual((raw["error"], raw["columns"], raw["rows"]), (None, ["c"], [["2"]]))

        # The write just made shows in the latency chart (p50/p99 of the writes in a poll).
        self.wait_for(
            lambda: self.browser.evaluate(LATENCY_POINTS_JS),
            "a point in the write-latency chart",
        )

        self.run_in_console("SELECT name, n FROM fruit ORDER BY n", "run-query")
        path = self.browser.screenshot(self.shots.resolve() / "console.png")
        print(f"console screenshot: {path}")

    def test_token_prompt_and_leadership_transfer(self) -> None:
        """With tokens on, the page asks for one and shows nothing until given it; with an
        admin token, "Transfer leadership" (confirmed) moves the leadership, and the page
        shows the new leader."""
        tokens = {"read": "r-token", "write": "w-token", "admin": "a-token"}
        self.launch(tokens)
        self.open_console()
        self.wait_for(
            lambda: self.browser.evaluate("!document.getElementById('token-form').hidden"),
            "the token prompt",
        )
        self.assertEqual(self.members(), [], "no cluster data without a token")
        self.assertIn(
            "401", self.browser.evaluate("document.getElementById('poll-state').textContent")
        )
        self.browser.evaluate("document.getElementById('token').focus()")
        self.browser.insert_text(tokens["admin"])
        self.browser.evaluate("document.getElementById('token-form').requestSubmit()")
        self.settle()
        # The confirm() dialog answered yes, as an operator would.
        self.browser.evaluate("window.confirm = () => true")
        self.browser.evaluate("document.getElementById('transfer').click()")
        self.wait_for(
            lambda: self.browser.evaluate(
                "document.getElementById('action-result').textContent.startsWith('done')"
            ),
            "the transfer answered",
        )
        self.wait_for(
            lambda: len(self.leaders_shown()) == 1 and self.leaders_shown()[0] != self.leader,
            "the new leader after the transfer",
        )

        # Add a member from the console: it joins as a learner (its node never runs here, so
        # the add answers member_unreachable), is shown, and is removed with its row's button.
        p2p, api = free_ports(2)
        for field, value in (("add-id", "n9"), ("add-host", "127.0.0.1")):
            self.browser.evaluate(
                f"document.getElementById({json.dumps(field)}).value = {json.dumps(value)}"
            )
        self.browser.evaluate(f"document.getElementById('add-p2p').value = '{p2p}'")
        self.browser.evaluate(f"document.getElementById('add-api').value = '{api}'")
        self.browser.evaluate("document.getElementById('action-result').textContent = ''")
        self.browser.evaluate("document.getElementById('add-member').requestSubmit()")
        self.wait_for(lambda: "n9" in [m["id"] for m in self.members()], "the added member n9")
        self.wait_for(
            lambda: self.browser.evaluate(
                "document.getElementById('action-result').textContent.includes('member_unreachable')"
            ),
            "the add's answer: n9 is out of reach",
        )
        self.browser.evaluate("document.querySelector('button[data-remove=\"n9\"]').click()")
        self.wait_for(
            lambda: sorted(m["id"] for m in self.members()) == sorted(self.cluster.node_ids),
            "n9 gone after its removal",
        )

        # Take a snapshot and download it through the console.
        self.browser.evaluate("document.getElementById('snapshot').click()")
        self.wait_for(
            lambda: self.browser.evaluate(
                "document.getElementById('action-result').textContent.startsWith('done')"
            ),
            "the snapshot taken",
        )
        downloads = (self.base / "downloads").resolve()
        downloads.mkdir()
        self.browser.call(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": str(downloads)},
            session=False,
        )
        self.browser.evaluate("document.getElementById('download').click()")
        self.wait_for(
            lambda: [p for p in downloads.iterdir() if p.name.endswith(".snapshot")],
            "the downloaded snapshot file",
        )
        saved = next(p for p in downloads.iterdir() if p.name.endswith(".snapshot"))
        self.assertTrue(saved.name.startswith(f"graft-{self.node}-"), saved.name)
        with saved.open("rb") as file:  # the SQLite FSM's snapshot is a database file
            self.assertEqual(file.read(16), b"SQLite format 3\x00")

    def test_a_certificate_that_expires_soon_shows_in_the_banner(self) -> None:
        """A follower renewed with a 5-day certificate (`graft certs renew --days 5`, then
        SIGHUP): the console flags it in its row and in the banner."""
        self.launch()
        self.open_console()
        self.wait_for(lambda: len(self.members()) == 3, "the three members")
        renewed = graft_cli(
            "certs", "renew", self.node, "--days", "5", "-c", str(self.cluster.config_path)
        )
        self.assertEqual(renewed.returncode, 0, renewed.stderr)
        self.cluster.signal(self.node, signal.SIGHUP)
        banner_js = "document.getElementById('banner').textContent"
        self.wait_for(
            lambda: (
                f"{self.node}'s certificate expires in 4 days" in self.browser.evaluate(banner_js)
            ),
            "the certificate banner",
        )
        others = [n for n in self.cluster.node_ids if n != self.node]
        self.assertNotIn(f"{others[0]}'s certificate", self.browser.evaluate(banner_js))
