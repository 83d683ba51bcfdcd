"""Disk use of each node's data dir while a 3-node cluster takes writes with snapshots on.

Shows that snapshots and compaction keep the data dirs bounded: the size is printed every
10,000 writes. Run:

    python -m benchmarks.compaction_bench [--writes 50000] [--snapshot-entries 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from graft.testing.cluster import LocalCluster


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=50_000)
    parser.add_argument("--snapshot-entries", type=int, default=1000)
    parser.add_argument("--segment-bytes", type=int, default=1 << 20)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="graft-compaction-") as tmp:
        cluster = LocalCluster(
            Path(tmp),
            extra={
                "snapshot": {
                    "entries": args.snapshot_entries,
                    "trailing": args.snapshot_entries,
                    "segment_bytes": args.segment_bytes,
                }
            },
        )
        try:
            cluster.start()
            leader, _ = cluster.wait_for_leader(timeout=20)
            print(
                f"snapshot every {args.snapshot_entries} entries, {args.segment_bytes} B "
                f"segments; kv puts of ~110 B over 1,000 distinct keys"
            )
            written = 0
            while written < args.writes:
                batch = [
                    json.dumps({"op": "put", "key": f"k{(written + i) % 1000}", "value": "v" * 60})
                    for i in range(args.batch)
                ]
                resp = cluster.request(
                    leader, "POST", "/commands", json.dumps(batch).encode(), timeout=60
                )
                if resp.status != 200:
                    raise SystemExit(f"write failed: {resp.status} {resp.body[:200]!r}")
                written += args.batch
                if written % 10_000 == 0:
                    sizes = ", ".join(
                        f"{n} {du(cluster.data_dir(n)) / 1e6:.2f} MB" for n in cluster.node_ids
                    )
                    print(f"after {written:>6} writes: {sizes}")
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
