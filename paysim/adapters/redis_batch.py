"""Batching store calls into one round trip: the Redis store's only path to Redis.

Theory of operation
-------------------
A store call becomes an *op* (a code and its arguments, see
``redis_scripts.OPS``) put on a queue; the caller then waits for its result.
One sender task takes every op waiting (up to ``MAX_OPS``) and sends them as
one EVALSHA of the ops script, MessagePack-encoded into a single argument
(``encode_ops``: coredis's cost grows with the number of arguments), then hands
each caller its result. Under load the queue fills while a batch is on the
wire, so the batches grow by themselves; at low load an op goes out at once,
alone. One batch in flight, not several: Redis runs scripts one at a time
anyway, and with two senders the batches were smaller and the server idled
about 4 % of the time under load (measured with ``benchmarks.scaleout``).

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import msgpack
import structlog
import trio

from paysim.errors import StoreUnavailable

log = structlog.get_logger("paysim.store")

MAX_OPS = 256

Arg = str | bytes | int | list[str]


@dataclass(eq=False, slots=True)
class _Op:
    args: tuple[Arg, ...] | Callable[[], tuple[Arg, ...]]  # a callable: made when sent
    waiter: trio.lowlevel.Task | None = None  # rescheduled with the result; None: nobody
    result: Any = None
    failed: bool = False
    withdrawn: bool = False
    taken: bool = False

    def finish(self) -> None:
        if self.waiter is not None:
            trio.lowlevel.reschedule(self.waiter)
            self.waiter = None


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
        op = _Op(args, trio.lowlevel.current_task())
        self._queue.append(op)
        if self._lot:  # a sender waits for work
            self._lot.unpark()

        def abort(_: object) -> trio.lowlevel.Abort:
            # Cancelled while waiting: never woken by the sender now, and an op
            # not taken yet is never sent.
            op.waiter = None
            op.withdrawn = not op.taken
            return trio.lowlevel.Abort.SUCCEEDED

        # Woken (op.finish) by the sender with the result; lighter than an Event per op.
        await trio.lowlevel.wait_task_rescheduled(abort)
        if op.failed:
            raise StoreUnavailable()
        return op.result

    def post(self, make: Callable[[], tuple[Arg, ...]]) -> None:
        """Queue an op nobody waits for; ``make()`` gives its arguments when it is sent
        (so that what accumulates until then goes in one op). A failure is logged."""
        self._queue.append(_Op(make))
        if self._lot:
            self._lot.unpark()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """The sender: send what waits, one batch at a time, until cancelled."""
        queue = self._queue
        task_status.started()
        while True:
            while not queue:
                await self._lot.park()
            # Let the tasks that are ready now run first: under load they add
            # their ops to this batch instead of starting the next one.
            await trio.lowlevel.cancel_shielded_checkpoint()
            batch: list[_Op] = []
            ops: list[tuple[Arg, ...]] = []
            while queue and len(batch) < MAX_OPS:
                op = queue.popleft()
                if op.withdrawn:
                    continue
                op.taken = True
                batch.append(op)
                ops.append(op.args() if callable(op.args) else op.args)
            if not batch:
                continue
            try:
                # Encoded in here: a value MessagePack cannot take fails its batch,
                # not the sender.
                payload = encode_ops(ops)
                with trio.fail_after(self._timeout_s):
                    results = await self._script(
                        keys=[self._header[0]], args=[*self._header, payload]
                    )
                self.batches += 1
            except (Exception, trio.TooSlowError) as exc:
                log.warning("store call failed", ops=len(batch), error=_describe(exc))
                for op in batch:
                    op.failed = True
                    op.finish()
                continue
            for op, result in zip(batch, results, strict=True):
                op.result = result
                op.finish()


def encode_ops(ops: list[tuple[Arg, ...]]) -> bytes:
    """The ops as the script's ARGV[3]: a MessagePack array of arrays.

    Bytes go as MessagePack *str*: Redis's Lua ``cmsgpack`` rejects the *bin*
    type, and a Lua string holds any bytes anyway.
    """
    packed: bytes = msgpack.packb(ops, use_bin_type=False)
    return packed


def _describe(exc: BaseException) -> str:
    """The error's kind and message; coredis messages carry no data or credentials."""
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"[:300]
