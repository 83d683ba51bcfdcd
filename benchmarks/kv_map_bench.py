"""The kv FSM's puts as its map grows: CPU per put and the puts that held the thread longest.

    .venv/bin/python -m benchmarks.kv_map_bench [--keys 1450000]

Applies ``--keys`` puts of new 24-byte keys with 100-byte values to one KeyValueStateMachine,
timing each apply() in the thread's CPU time (time.thread_time, so a busy machine's
descheduling does not count), with the cyclic GC off. A map held in one dict shows its
resizes here (every insert that doubles the table copies every entry); graft/fsm/kv_map.py
says why the map is split.
"""

from __future__ import annotations

import argparse
import gc
import time

from graft.fsm.kv import KeyValueStateMachine

VALUE = "v" * 100
SLOW_MS = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_450_000)
    args = parser.parse_args()
    commands = [
        b'{"op":"put","key":"bench-abcdef-%011d","value":"%s"}' % (i, VALUE.encode())
        for i in range(args.keys)
    ]
    fsm = KeyValueStateMachine()
    clock = time.thread_time
    slow: list[tuple[float, int]] = []
    gc.disable()
    started = clock()
    for index, command in enumerate(commands):
        before = clock()
        fsm.apply(command, index + 1)
        took = (clock() - before) * 1000
        if took > SLOW_MS:
            slow.append((took, index + 1))
    total = clock() - started
    gc.enable()
    slow.sort(reverse=True)
    print(f"{args.keys} puts: {total / args.keys * 1e6:.2f} us of CPU per put")
    print(f"puts above {SLOW_MS} ms of CPU: {len(slow)}")
    for took, keys in slow[:8]:
        print(f"  {took:7.1f} ms at {keys} keys")


if __name__ == "__main__":
    main()
