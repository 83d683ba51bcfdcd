"""``python -m graft.testing.simulation``: seeded random schedules of the Raft core, checked.

This module supplies ``random.Random`` to the schedules (graft.testing.simulation.run) and
spreads seeds over processes.

    python -m graft.testing.simulation --seeds 20000          # seeds 0..19999
    python -m graft.testing.simulation --seed 1234 --trace    # replay one seed, every event
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from random import Random

from graft.testing.simulation.run import SimResult, simulate_seed


def run_one(seed: int) -> SimResult:
    return simulate_seed(seed, Random)


def run_many(seeds: Sequence[int], jobs: int) -> list[SimResult]:
    if jobs <= 1 or len(seeds) < 50:
        return [run_one(s) for s in seeds]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return pool.map(run_one, seeds, chunksize=max(1, len(seeds) // (jobs * 20)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graft.testing.simulation", description=__doc__)
    parser.add_argument("--seeds", type=int, default=1000, help="run seeds 0..N-1")
    parser.add_argument("--first", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seed", type=int, help="run only this seed")
    parser.add_argument("--trace", action="store_true", help="print every event (with --seed)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    args = parser.parse_args(argv)
    if args.seed is not None:
        result = simulate_seed(args.seed, Random, trace=args.trace)
        results = [result]
    else:
        started = time.monotonic()
        results = run_many(range(args.first, args.first + args.seeds), args.jobs)
        elapsed = time.monotonic() - started
        print(
            f"ran {len(results)} seeds in {elapsed:.1f}s, "
            f"{sum(r.commit for r in results)} entries committed, "
            f"{sum(r.reads for r in results)} reads checked, "
            f"{sum(r.snapshots_installed for r in results)} snapshots installed, "
            f"{sum(r.transfers_done for r in results)} of "
            f"{sum(r.transfers_asked for r in results)} transfers done, "
            f"{sum(r.memberships_committed for r in results)} membership changes committed "
            f"({sum(r.non_voter_changes for r in results)} non-voter changes proposed), "
            f"{sum(r.stale_leaders_checked for r in results)} stale-leader checks, "
            f"{sum(r.session_commands for r in results)} session commands applied, "
            f"{sum(r.session_resent for r in results)} resent, "
            f"{sum(r.session_duplicates for r in results)} answered as duplicates"
        )
    failed = [r for r in results if r.violation is not None]
    for r in failed:
        print(f"seed {r.seed}: {r.violation}")
        if not args.trace:
            for line in r.trace[-30:]:
                print(f"    {line}")
            print(f"    replay: python -m graft.testing.simulation --seed {r.seed} --trace")
    print(f"simulate: {len(results)} seeds, {len(failed)} violations")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
