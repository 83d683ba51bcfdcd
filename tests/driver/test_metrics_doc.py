"""docs/operations.md's metrics reference is what a node exports: every metric a started
in-memory node registers (with its HTTP API and space monitor, as graft.service wires them) is
in the table with its type and labels, and every row of the table is registered."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry
from twisted.trial.unittest import SkipTest

from graft.api import make_api_resource
from graft.metrics import register_inline_fsync
from graft.space import SpaceMonitor, SpaceQuota
from graft.storage.inline_fsync import InlineFsync, InlineFsyncRule
from tests.api.fakes import Settings
from tests.support.driver import DriverCluster

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
# | `name` | type | labels | meaning |
_ROW = re.compile(r"^\| `([a-z_:]+)` \| (counter|gauge|histogram) \|([^|]*)\|")


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """The table under "## Metrics reference": name -> (type, labels)."""
    text = DOC.read_text()
    section = text.split("## Metrics reference", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        found = _ROW.match(line)
        if found:
            labels = frozenset(re.findall(r"`([a-z_]+)`", found.group(3)))
            rows[found.group(1)] = (found.group(2), labels)
    return rows


def registered(registry: CollectorRegistry) -> dict[str, tuple[str, frozenset[str]]]:
    """What the registry exports: name as scraped (counters with _total) -> (type, labels)."""
    out = {}
    collectors = list(registry._collector_to_names)  # the label names of unset metrics
    for collector in collectors:
        names = tuple(getattr(collector, "_labelnames", ()))
        for family in collector.collect():
            name = family.name + "_total" if family.type == "counter" else family.name
            # A collector's own families (graft.api.http_metrics) declare theirs on the family.
            declared = set(getattr(family, "_labelnames", ()))
            labels = {k for s in family.samples for k in s.labels} | set(names) | declared
            out[name] = (family.type, frozenset(labels - {"le"}))
    return out


class MetricsReferenceTests(DriverCluster):
    def test_table_and_registry_agree(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SkipTest("the process_* metrics exist on Linux only")
        self.start_nodes()
        self.leader()
        node = next(iter(self.network.nodes.values()))
        registry = node.metrics
        make_api_resource(node, Settings(), reactor=self.clock)  # the HTTP metrics
        data_dir = Path(self.mktemp())
        SpaceMonitor(SpaceQuota(0, node_id="a", data_dir=data_dir), data_dir, clock=self.clock,
                     registry=registry)  # fmt: skip
        # graft.service wires the durable log's inline fsync (an in-memory node has none).
        register_inline_fsync(registry, lambda: InlineFsync(InlineFsyncRule()))
        table = documented()
        exported = registered(registry)
        self.assertEqual(sorted(set(exported) - set(table)), [], "exported, not in the docs")
        self.assertEqual(sorted(set(table) - set(exported)), [], "in the docs, not exported")
        for name, (kind, labels) in exported.items():
            self.assertEqual(table[name], (kind, labels), name)
