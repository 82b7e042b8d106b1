"""Batching store calls into one round trip: the Redis store's only path to Redis.

Theory of operation
-------------------
A store call becomes an *op* (a code and its arguments, see
``redis_scripts.OPS``) put on a queue; the caller then waits for its result.
``FLUSHERS`` tasks take every op waiting (up to ``MAX_OPS``) and send them as
one EVALSHA of the ops script, then hand each caller its result. Under load
the queue fills while a batch is on the wire, so the batches grow by
themselves; at low load an op goes out at once, alone.

Cancellation: a caller cancelled before its op was taken withdraws it (it is
never sent); one cancelled after that stops waiting, and the op runs anyway,
as any Redis command does once sent. Every op is written so that running
without its caller harms nothing (see ``redis_store``).

Errors: a batch that fails (connection lost, no answer within the timeout, a
server error) fails every op in it with ``StoreUnavailable``, logged once per
failure with its cause but never with the data.

The coredis client is owned by the caller (``redis_store.open_redis_store``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, NoReturn

import structlog
import trio

from paysim.errors import StoreUnavailable

log = structlog.get_logger("paysim.store")

MAX_OPS = 256
FLUSHERS = 2

Arg = str | bytes | int | float


@dataclass(eq=False, slots=True)
class _Op:
    args: tuple[Arg, ...]
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    failed: bool = False
    withdrawn: bool = False
    taken: bool = False


class OpBatcher:
    """Queues ops and sends them in batches; ``run`` must be running for calls to finish."""

    def __init__(self, script: Any, header: tuple[Arg, ...], timeout_s: float) -> None:
        """``script`` is a coredis ``Script`` of ``OPS``; ``header`` its first ARGV values."""
        self._script = script
        self._header = list(header)
        self._timeout_s = timeout_s
        self._queue: deque[_Op] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self.batches = 0  # sent so far (for tests and the benchmark)

    async def call(self, *args: Arg) -> Any:
        """Run one op; its result, or ``StoreUnavailable``."""
        op = _Op(args)
        self._queue.append(op)
        self._lot.unpark()
        try:
            await op.done.wait()
        except BaseException:
            if not op.taken:
                op.withdrawn = True
            raise
        if op.failed:
            raise StoreUnavailable()
        return op.result

    def post(self, *args: Arg) -> None:
        """Queue an op nobody waits for (its failure is logged, not raised)."""
        self._queue.append(_Op(args))
        self._lot.unpark()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        async with trio.open_nursery() as nursery:
            for _ in range(FLUSHERS):
                nursery.start_soon(self._flusher)
            task_status.started()
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _flusher(self) -> None:
        queue = self._queue
        while True:
            while not queue:
                await self._lot.park()
            batch: list[_Op] = []
            argv = list(self._header)
            while queue and len(batch) < MAX_OPS:
                op = queue.popleft()
                if op.withdrawn:
                    continue
                op.taken = True
                batch.append(op)
                argv.extend(op.args)
            if not batch:
                continue
            try:
                with trio.fail_after(self._timeout_s):
                    results = await self._script(keys=[self._header[0]], args=argv)
                self.batches += 1
            except (Exception, trio.TooSlowError) as exc:
                log.warning("store call failed", ops=len(batch), error=_describe(exc))
                for op in batch:
                    op.failed = True
                    op.done.set()
                continue
            for op, result in zip(batch, results, strict=True):
                op.result = result
                op.done.set()


def _describe(exc: BaseException) -> str:
    """The error's kind and message; coredis messages carry no data or credentials."""
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"[:300]
