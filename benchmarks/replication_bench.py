"""Entries per second replicated by a real 3-node cluster, storage and mutual TLS on.

Each request is a POST /commands batch of 100-byte kv puts sent to the leader; an entry counts
once the leader answered, i.e. it is committed (durable on a majority) and applied. Run:

    python -m benchmarks.replication_bench [--seconds 10] [--batch 500] [--clients 4]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from graft.testing.cluster import LocalCluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="graft-repl-bench-") as tmp:
        cluster = LocalCluster(Path(tmp))
        try:
            cluster.start()
            leader, _ = cluster.wait_for_leader(timeout=20)
            value = "x" * 60  # the JSON command is about 100 bytes
            committed = [0] * args.clients
            errors = [0] * args.clients
            stop = threading.Event()

            def client(k: int) -> None:
                n = 0
                while not stop.is_set():
                    batch = [
                        json.dumps({"op": "put", "key": f"c{k}-{n + i:09d}", "value": value})
                        for i in range(args.batch)
                    ]
                    n += args.batch
                    resp = cluster.request(
                        leader, "POST", "/commands", json.dumps(batch).encode(), timeout=30
                    )
                    if resp.status == 200:
                        committed[k] += args.batch
                    else:
                        errors[k] += 1

            threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            started = time.monotonic()
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
            entry_bytes = len(json.dumps({"op": "put", "key": "c0-000000000", "value": value}))
            print(
                f"replication: {sum(committed) / elapsed:,.0f} entries/s committed and applied "
                f"({sum(committed)} entries of {entry_bytes} bytes in {elapsed:.1f} s; batches of "
                f"{args.batch}, {args.clients} clients; {sum(errors)} failed requests); "
                f"3 nodes on one {os.cpu_count()}-core machine, fsync and mutual TLS on"
            )
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
