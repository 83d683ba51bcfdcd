# mypy: disable-error-code="no-untyped-call"
"""One process of a lock fault run: examples/lock.py's Lock, embedded, with lock clients.

    python -m graft.testing.faults.lock_node --bind ADDRESS --clock-file PATH --config PATH
        --node ID --history PATH --resource HOST:PORT --epoch SECONDS [--clients N]

The process is a Graft node started with ``graft.start_node`` on the replicated ``Lock`` class
of examples/lock.py (with the HTTP API on, for the harness's status poller and final checks),
under the same fault hooks as a ``twist graft`` node of the suite (node_main: outbound
connections from the node's own address, a steppable wall clock, stallable fsyncs). Its
``--clients`` lock clients loop: acquire the lock for a short lease (``now`` is this process's
wall clock, which the clock-step nemesis moves), do some "work", write twice to the guarded
resource with the fencing token, release. Each finished call is one JSON line
(lock_checker.LockRecord) in ``--history``, flushed at once so a SIGKILL loses only the calls in
flight. Times are ``time.monotonic() - epoch``: the driver's run clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import importlib.util
import json
import random
import sys
import time
from pathlib import Path
from typing import IO, Any, cast

from twisted.internet import reactor as global_reactor
from twisted.internet import task
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, Logger, globalLogBeginner, textFileLogObserver

from graft.embed import EmbeddedNode, start_node
from graft.replicated import Rejected, decode, encode_call, methods_of
from graft.testing.faults.disk import install_fsync_stall
from graft.testing.faults.lock_checker import ERROR, OK, REFUSED, LockRecord
from graft.testing.faults.node_main import WallClockOffset, bind_outbound_connections

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "lock.py"
WRITE_TIMEOUT = 2.0
reactor: Any = global_reactor
log = Logger(namespace="graft.testing.faults.lock_node")


def load_lock_class(path: Path = EXAMPLE) -> type:
    """examples/lock.py's Lock (the example is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("graft_example_lock", path)
    if spec is None or spec.loader is None or not path.exists():
        raise SystemExit(f"the lock example is not at {path}; run from a Graft source tree")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Lock  # type: ignore[no-any-return]


class LockClient:
    def __init__(
        self,
        node: EmbeddedNode,
        lock_class: type,
        owner: str,
        history: IO[str],
        resource: str,
        epoch: float,
        rng: random.Random,
        *,
        ttl: float,
        work: float,
    ) -> None:
        self.node = node
        self.owner = owner
        self.history = history
        self.host, port = resource.rsplit(":", 1)
        self.port = int(port)
        self.epoch = epoch
        self.rng = rng
        self.ttl = ttl
        self.work = work
        self.methods = methods_of(lock_class)

    def now(self) -> float:
        return time.monotonic() - self.epoch

    def record(self, **fields: Any) -> None:
        rec = LockRecord(client=self.owner, node=self.node.node_id, **fields)
        self.history.write(json.dumps(dataclasses.asdict(rec), sort_keys=True) + "\n")
        self.history.flush()

    async def call(self, name: str, *args: Any) -> tuple[int, Any]:
        """A command through the node, with the log index it was applied at."""
        data = encode_call(name, self.methods[name][1], args, {})
        results = await self.node.submit([data])
        result = results[0]
        if result.error is not None:
            raise Rejected(result.error)
        return result.index, decode(result.output)

    async def sleep(self, seconds: float) -> None:
        await task.deferLater(reactor, seconds, lambda: None)

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:  # a bug in this client: say so, and go on with the next round
                log.failure("lock client {owner} failed", owner=self.owner)
                await self.sleep(0.5)

    async def round(self) -> None:
        token = await self.acquire()
        if token is None:
            await self.sleep(self.rng.uniform(0.05, 0.2))
            return
        for n in range(2):
            await self.sleep(self.rng.uniform(0, self.work))
            await self.write(token, n)
        await self.release(token)

    async def acquire(self) -> int | None:
        invoke = self.now()
        try:
            index, grant = await self.call("acquire", self.owner, time.time(), self.ttl)
        except Rejected as e:
            self.record(
                kind="acquire",
                invoke=invoke,
                complete=self.now(),
                outcome=REFUSED,
                error=e.args[0] if e.args else str(e),
            )
            return None
        except Exception as e:  # NoLeader, Timeout, a stopping node: it may have been granted
            self.record(
                kind="acquire",
                invoke=invoke,
                complete=self.now(),
                outcome=ERROR,
                error=f"{type(e).__name__}: {e}",
            )
            return None
        granted = bool(grant.get("granted"))
        token = grant.get("token") if granted else None
        self.record(
            kind="acquire",
            invoke=invoke,
            complete=self.now(),
            outcome=OK,
            granted=granted,
            token=token,
            index=index,
        )
        return token

    async def write(self, token: int, n: int) -> None:
        invoke = self.now()
        body = {"client": self.owner, "token": token, "key": "k", "value": f"{self.owner}-{n}"}
        try:
            status, answer = await deferToThread(self._post, body)
        except Exception as e:  # no answer: the resource may or may not have taken it
            self.record(
                kind="write",
                invoke=invoke,
                complete=self.now(),
                outcome=ERROR,
                token=token,
                error=f"{type(e).__name__}: {e}",
            )
            return
        outcome = OK if status == 200 else REFUSED if status == 409 else ERROR
        self.record(
            kind="write",
            invoke=invoke,
            complete=self.now(),
            outcome=outcome,
            token=token,
            error=None if status == 200 else json.dumps(answer),
        )

    def _post(self, body: dict[str, Any]) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=WRITE_TIMEOUT)
        try:
            conn.request("POST", "/write", body=json.dumps(body).encode())
            reply = conn.getresponse()
            return reply.status, json.loads(reply.read() or b"null")
        finally:
            conn.close()

    async def release(self, token: int) -> None:
        invoke = self.now()
        try:
            _, released = await self.call("release", self.owner, token)
        except Exception as e:
            self.record(
                kind="release",
                invoke=invoke,
                complete=self.now(),
                outcome=ERROR,
                token=token,
                error=f"{type(e).__name__}: {e}",
            )
            return
        self.record(
            kind="release",
            invoke=invoke,
            complete=self.now(),
            outcome=OK if released else REFUSED,
            token=token,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graft.testing.faults.lock_node")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--clock-file", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--history", type=Path, required=True)
    parser.add_argument("--resource", required=True, help="HOST:PORT of the guarded resource")
    parser.add_argument("--epoch", type=float, required=True, help="the run's time.monotonic()")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--ttl", type=float, default=1.0, help="the lease, seconds")
    parser.add_argument("--work", type=float, default=0.4, help="most seconds before a write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    WallClockOffset(args.clock_file).install()
    bind_outbound_connections(args.bind)
    install_fsync_stall()
    observer = cast(ILogObserver, textFileLogObserver(sys.stdout))
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    lock_class = load_lock_class()
    node = start_node(args.config, args.node, lock_class(), http_api=True)
    history = args.history.open("a")
    rng = random.Random(f"{args.seed}-{args.node}-{time.monotonic()}")
    for i in range(args.clients):
        client = LockClient(
            node,
            lock_class,
            f"{args.node}-c{i}",
            history,
            args.resource,
            args.epoch,
            rng,
            ttl=args.ttl,
            work=args.work,
        )
        reactor.callWhenRunning(lambda c=client: ensureDeferred(c.run()))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
