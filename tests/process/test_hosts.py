"""A cluster over hosts: each node in its own network namespace on a bridge, advertising a name
and binding 0.0.0.0 (graft.testing.hosts, also `python -m graft.testing.hosts`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from twisted.trial import unittest

from graft.testing.hosts import hosts_cluster, scenario


class MultiHostTests(unittest.TestCase):
    def setUp(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise unittest.SkipTest("network namespaces need root and iproute2")

    def test_names_and_wildcard_binds_across_hosts(self) -> None:
        """From a client in its own namespace, by name: every node serves (nodes whose own name
        resolves to 127.0.1.1 included), the cluster elects and replicates, a fourth node
        joins, the leader is killed and another takes writes, and the membership lists the
        advertised names. The namespaces and hosts files are gone afterwards."""
        steps: list[str] = []
        base = Path(self.mktemp()).resolve()
        base.mkdir(parents=True)
        with hosts_cluster(base) as (cluster, client):
            names = [ns.name for ns in cluster.network.namespaces.values()]
            scenario(cluster, client, steps.append)
        self.assertEqual(len(steps), 6, steps)
        left = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
        self.assertEqual([n for n in names if n in left], [])
        self.assertFalse(any(Path("/etc/netns", n).exists() for n in names))
