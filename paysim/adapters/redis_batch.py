"""Batching store calls into one round trip: the Redis store's only path to Redis.

Theory of operation
-------------------
A store call becomes an *op* (a code and its arguments, see
``redis_scripts.OPS``) put on a queue; the caller then waits for its result.
One sender task takes every op waiting (up to ``MAX_OPS``) and sends them as
one EVALSHA of the ops script, MessagePack-encoded into a single argument
(``encode_ops``: one C call on each side beats framing fields), on the store's
own connection (``redis_wire``: no coredis on this path), then hands each
caller its result (the script packs its results the same way:
``decode_results``). Under load the queue fills while a batch is on the
wire, so the batches grow by themselves; at low load an op goes out at once,
alone. One batch in flight, not several: Redis runs scripts one at a time
anyway, and with two senders the batches were smaller and the server idled
about 4 % of the time under load (measured with ``benchmarks.scaleout``).

Cancellation: a caller cancelled before its op was taken withdraws it (it is
never sent); one cancelled after that stops waiting, and the op runs anyway,
as any Redis command does once sent. Every op is written so that running
without its caller harms nothing (see ``redis_store``).

Errors, translated here once (``classify``): a batch that fails fails every op
in it with ``StoreUnavailable`` (a ``LostReply`` if the batch may have run).
Whatever the network, ``redis_wire``, coredis or Redis raises
(``STORE_ERRORS``: connection refused or lost, no answer within the timeout,
the pool, a server still loading its data, ...) also marks the store
*unreachable*: then calls fail at once instead of queueing, ``available`` turns
False (readiness reads it), and the sender probes with backoff (``backoff``):
after each wait it sends what waits, or an empty batch, until one succeeds. Ops
nobody waits for (``post``) are kept through an outage and sent when the store
is back. Logged once when the store goes and once when it comes back, with the
cause but never the data. Any other error fails only its batch.

The script and its connection are owned by the caller (``redis_store``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn, cast

import anyio
import coredis.exceptions
import msgpack
import outcome
import structlog
import trio
from trio_util import AsyncBool

from paysim.adapters.redis_wire import UnreachableReply
from paysim.backoff import Backoff
from paysim.errors import StoreUnavailable
from paysim.parking import ParkingSpot

log = structlog.get_logger("paysim.store")

MAX_OPS = 256

Arg = str | bytes | int | float | list[str]

# What the network, coredis and Redis raise when the store cannot be used right
# now (refused or lost connections, a deadline, a blocked pool, a server still
# loading or read-only after a failover): all of them mean "unreachable".
STORE_ERRORS: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError,
    coredis.exceptions.BusyLoadingError,
    coredis.exceptions.TryAgainError,
    coredis.exceptions.ReadOnlyError,
    coredis.exceptions.ClusterDownError,
    coredis.exceptions.AuthenticationError,
    coredis.exceptions.ProtocolError,
    coredis.exceptions.InvalidResponse,
    UnreachableReply,
    ConnectionError,
    TimeoutError,
    OSError,
    EOFError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


class LostReply(StoreUnavailable):
    """The call was sent and its answer lost: it may have run on the server."""


def classify(exc: BaseException) -> bool:
    """True if ``exc`` (maybe a group of them) says the store is unreachable."""
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(STORE_ERRORS)
        return rest is None
    return isinstance(exc, STORE_ERRORS)


class _Op(ParkingSpot):
    """One op and the task waiting for it; the caller parks on the op itself.

    Why a ``ParkingSpot`` that is its own outcome: a store call parks once per
    op, and trio's ``wait_task_rescheduled`` with an ``outcome.Value`` per wake-up
    makes a coroutine, a generator, an abort closure and the ``Value`` for each.
    Here the op is the abort function (``__call__``) and what ``reschedule`` hands
    the parked task: trio passes it through untouched and the waiting side calls
    its ``unwrap``, as it would a ``Value``'s (``paysim.parking``).
    """

    __slots__ = ("args", "failed", "posted", "result", "taken", "waiter", "withdrawn")

    def __init__(
        self,
        args: tuple[Arg, ...] | Callable[[], tuple[Arg, ...]],  # a callable: made when sent
        waiter: trio.lowlevel.Task | None = None,  # rescheduled when done; None: nobody
        posted: bool = False,  # nobody waits: kept through an outage
    ) -> None:
        self.args = args
        self.waiter = waiter
        self.posted = posted
        self.result: Any = None
        self.failed = False
        self.withdrawn = False
        self.taken = False

    def __call__(self, raise_cancel: Callable[[], object]) -> trio.lowlevel.Abort:
        # The waiter was cancelled: never woken by the sender now, and an op not
        # taken yet is never sent.
        self.waiter = None
        self.withdrawn = not self.taken
        return trio.lowlevel.Abort.SUCCEEDED

    def unwrap(self) -> Any:
        """The result for the woken waiter, or its failure raised."""
        if self.failed:
            raise LostReply() if self.taken else StoreUnavailable()
        return self.result

    def finish(self) -> None:
        task = self.waiter
        if task is not None:
            self.waiter = None
            trio.lowlevel.reschedule(task, cast("outcome.Outcome[Any]", self))


class OpBatcher:
    """Queues ops and sends them in batches; ``run`` must be running for calls to finish."""

    def __init__(
        self, script: Any, header: tuple[Arg, ...], timeout_s: float, backoff: Backoff | None = None
    ) -> None:
        """``script`` runs ``OPS`` (a ``redis_wire.WireScript``): ``await script(keys=...,
        args=...)`` gives the script's reply, its packed results (``decode_results``);
        ``header`` is its first ARGV values."""
        self._script = script
        self._header = list(header)
        self._timeout_s = timeout_s
        self._backoff = backoff if backoff is not None else Backoff()
        self._queue: deque[_Op] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self.batches = 0  # sent so far (for tests and the benchmark)
        self.available = AsyncBool(True)  # False from an outage until a probe succeeds
        self._down_since = 0.0

    async def call(self, *args: Arg) -> Any:
        """Run one op; its result, or ``StoreUnavailable`` (at once while unreachable)."""
        if not self.available.value:
            await trio.lowlevel.checkpoint()
            raise StoreUnavailable()
        op = _Op(args, trio.lowlevel.current_task())
        self._queue.append(op)
        if self._lot:  # a sender waits for work
            self._lot.unpark()
        return await op  # woken by the sender (op.finish), or cancelled (op.__call__)

    def post(self, make: Callable[[], tuple[Arg, ...]]) -> None:
        """Queue an op nobody waits for; ``make()`` gives its arguments when it is sent
        (so that what accumulates until then goes in one op). Kept until the store
        takes it, through outages; any other failure is logged and drops it."""
        self._queue.append(_Op(make, posted=True))
        if self._lot:
            self._lot.unpark()

    def unreachable(self, exc: BaseException) -> None:
        """Another path to the same server (a script) found it unreachable: probe it."""
        if classify(exc):
            self._went_down(exc)

    def reachable(self) -> None:
        """Another path to the same server just got an answer: use it again."""
        self._came_back()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """The sender: send what waits, one batch at a time, until cancelled.

        While the store is unreachable it waits (backoff), then sends what waits
        or, if nothing does, an empty batch: the probe that brings it back.
        """
        queue = self._queue
        task_status.started()
        while True:
            if self.available.value:
                while not queue and self.available.value:
                    await self._lot.park()
            if not self.available.value:
                await trio.sleep(self._backoff.failed())
            # Let the tasks that are ready now run first: under load they add
            # their ops to this batch instead of starting the next one.
            await trio.lowlevel.cancel_shielded_checkpoint()
            batch: list[_Op] = []
            ops: list[tuple[Arg, ...]] = []
            while queue and len(batch) < MAX_OPS:
                op = queue.popleft()
                if op.withdrawn:
                    continue
                args = op.args() if callable(op.args) else op.args
                op.args = args  # made once: a retry sends the same op
                op.taken = True
                batch.append(op)
                ops.append(args)
            if not batch and self.available.value:
                continue
            try:
                # Encoded and decoded in here: a value MessagePack cannot take, or
                # a reply it cannot read, fails its batch, not the sender.
                payload = encode_ops(ops)
                with trio.fail_after(self._timeout_s):
                    reply = await self._script(
                        keys=[self._header[0]], args=[*self._header, payload]
                    )
                results = decode_results(reply)
                self.batches += 1
            except Exception as exc:
                self._failed(batch, exc)
                continue
            self._came_back()
            for op, result in zip(batch, results, strict=True):
                op.result = result
                op.finish()

    def _failed(self, batch: list[_Op], exc: Exception) -> None:
        if not classify(exc):
            log.warning("store call failed", ops=len(batch), error=describe(exc))
            for op in batch:
                op.failed = True
                op.finish()
            return
        self._went_down(exc)
        # Ops nobody waits for go back to the front, in order, for the next try.
        self._queue.extendleft(reversed([op for op in batch if op.posted]))
        for op in batch:
            if not op.posted:
                op.failed = True
                op.finish()

    def _went_down(self, exc: BaseException) -> None:
        if not self.available.value:
            return
        self.available.value = False
        self._down_since = trio.current_time()
        log.warning("store unreachable; retrying with backoff", error=describe(exc))
        # Calls waiting for a batch fail now, as every call does until a probe succeeds.
        kept: deque[_Op] = deque()
        for op in self._queue:
            if op.posted:
                kept.append(op)
            elif not op.withdrawn:
                op.failed = True
                op.finish()
        self._queue.clear()
        self._queue.extend(kept)
        if self._lot:
            self._lot.unpark()

    def _came_back(self) -> None:
        self._backoff.reset()
        if self.available.value:
            return
        self.available.value = True
        log.info("store reachable again", down_s=round(trio.current_time() - self._down_since, 3))


def encode_ops(ops: list[tuple[Arg, ...]]) -> bytes:
    """The ops as the script's ARGV[3]: a MessagePack array of arrays.

    Bytes go as MessagePack *str*: Redis's Lua ``cmsgpack`` rejects the *bin*
    type, and a Lua string holds any bytes anyway.
    """
    packed: bytes = msgpack.packb(ops, use_bin_type=False)
    return packed


def decode_results(reply: bytes) -> list[Any]:
    """The script's reply (one MessagePack array, see ``redis_scripts.OPS``) as its results.

    Strings come back as bytes, as from RESP; Lua's false (a missing key or an
    unclaimed idempotency key) as None, as RESP turns it into a nil.
    """
    results: list[Any] = msgpack.unpackb(reply, raw=True)
    return [None if r is False else r for r in results]


def describe(exc: BaseException) -> str:
    """The error's kind and message; coredis messages carry no data or credentials."""
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions[:3])[:300]
    return f"{type(exc).__name__}: {exc}"[:300]
