"""A writer process for the SIGKILL test: appends forever, printing each durable index.

Run as ``python -m tests.storage.sigkill_writer DATA_DIR``. It reopens the log (continuing
where the last run stopped), then on the real reactor persists batches of entries of random
sizes, several per reactor turn, and prints ``durable N`` once persist's Deferred has fired.
Entry data is a function of the index, so the test can check every byte it gets back.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor

from graft.raft.types import Entry, HardState
from graft.storage import DurableLog

reactor: Any = _reactor


def data_for(index: int) -> bytes:
    return hashlib.sha256(b"%d" % index).digest() * 3 + b"%04d" % (index % 10000)


def main(data_dir: str) -> None:
    log = DurableLog.open(
        Path(data_dir), node_id="n1", cluster="sigkill", segment_bytes=64 * 1024, reactor=reactor
    )
    rng = random.Random()
    print(f"opened {log.last_index()}", flush=True)

    def durable(_: None, index: int) -> None:
        sys.stdout.write(f"durable {index}\n")
        sys.stdout.flush()

    def turn() -> None:
        for _ in range(rng.randint(1, 4)):
            first = log.last_index() + 1
            batch = [
                Entry(index=i, term=1, data=data_for(i))
                for i in range(first, first + rng.randint(1, 20))
            ]
            hard_state = HardState(term=1, vote="n1", commit=first - 1)
            log.persist(hard_state, batch).addCallback(durable, batch[-1].index)
        reactor.callLater(0, turn)

    reactor.callWhenRunning(turn)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
