"""The Redis store: payments shared by every replica (ElastiCache in AWS).

Theory of operation
-------------------
The data model and the Lua that keeps it are in ``redis_scripts``; every call
goes through ``redis_batch`` (one EVALSHA carries every call waiting).
Besides the ``PaymentStore`` port it keeps what lets replicas stand in for
each other:

* **due outcomes**: a payment's insert puts it in this replica's due set at
  the time the simulated PG answers (``SimClock.answers_at``); the
  compare-and-set that resolves it takes it out, in the same script. The
  replica that created it still fires it from its own timer.
* **an outbox**: each compare-and-set that wins also records its status
  change under the replica that made it, until its webhook and event are done
  (``outbox_done``), so a change is announced at least once, under one event
  id, even if that replica dies right after.
* **leases**: ``maintain`` renews this replica's lease, moves the due
  outcomes and undelivered changes of any replica whose lease ended into
  shared pools, and claims a share of the pools; ``hand_over`` does the same
  for a replica that drains.

Why a cancelled call harms nothing (coredis, like any client, cannot unsend a
command): an insert is of a fresh id, and if its caller is gone no timer knows
it, so ``maintain`` names such overdue entries to their replica; a
compare-and-set is guarded by the version, and its change waits in the outbox;
an idempotency claim that outlives its request is released or left to expire;
``sweep`` and ``outbox_done`` are idempotent.

Outages (see ``redis_batch``, which maps every client error once, here at the
store's edge, to ``StoreUnavailable``): while Redis is unreachable every call
fails at once and ``available`` is False; the batch sender probes with backoff
and the store is used again as soon as it answers. A call whose answer was
lost may have run, and this is what keeps such a call harmless too:

* a compare-and-set that won without hearing so has its change in this
  replica's outbox but nobody delivering it; a lost answer to ``maintain``
  leaves claimed changes there alike. So after one, the next successful
  ``maintain`` reads the outbox and hands back every change that no local
  channel is delivering (``track_deliveries``) to be announced again;
* an idempotency claim whose answer was lost is released later if it still
  holds exactly what this call wrote; a release that fails is kept and sent
  when the store is back (``post``), so a key is never stuck "in progress".

Owned by ``open_redis_store``, which opens the connection pool, checks the
server, and closes the pool and the batches' own connection (``redis_wire``,
opened by the first batch) when its block ends; ``run``
(the batch sender) must run in a nursery inside that block.
"""

from __future__ import annotations

import os
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import coredis
import structlog
import trio
from coredis.retry import NoRetryPolicy
from trio_util import AsyncBool

from paysim.adapters import payment_codec as codec
from paysim.adapters.redis_batch import LostReply, OpBatcher, classify, describe
from paysim.adapters.redis_scripts import HAND_OVER, MAINTAIN, OPS
from paysim.adapters.redis_wire import Endpoint, RedisWire, WireScript
from paysim.config import StoreSettings
from paysim.domain.clock import SimClock
from paysim.domain.listing import sort_key
from paysim.domain.models import Payment, StatusChange
from paysim.errors import StoreUnavailable
from paysim.ports import IdempotencyRecord, Maintenance
from paysim.process import StartError

log = structlog.get_logger("paysim.store")

SWEEP_LIMIT = 1_000  # payments dropped per sweep call at most
CLAIM_LIMIT = 500  # due outcomes (and changes) claimed from the pools per maintenance
PENDING_CACHE = 200_000  # pending payments remembered for get_for_update, at most


class StoreStartError(StartError):
    """The store cannot be used; ``str()`` is a one-line reason without secrets."""


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisStore:
    """``PaymentStore`` on Redis. Construct with ``open_redis_store``."""

    shared = True

    def __init__(
        self,
        client: Any,
        settings: StoreSettings,
        *,
        replica_id: str,
        retention_s: float,
        time_scale: float,
    ) -> None:
        self._client = client
        self._prefix = "{" + settings.key_prefix + "}"
        self.replica_id = replica_id
        self._lease_ms = round(settings.lease_s * 1000)
        self._retention_s = retention_s
        self._retention_ms = max(1, round(retention_s * 1000))
        self._clock = SimClock(time_scale)
        # The batches go on their own connection, spoken directly (``redis_wire``).
        self._wire = RedisWire(Endpoint.from_settings(settings))
        self._ops = OpBatcher(
            WireScript(self._wire, OPS), (self._prefix, replica_id), settings.timeout_s
        )
        self._maintain = client.register_script(MAINTAIN)
        self._hand_over = client.register_script(HAND_OVER)
        self.timeout_s = settings.timeout_s
        self._finished: list[str] = []  # event ids for outbox_done's next op
        # A write to the outbox may have run unheard: read the outbox at the next maintain.
        self._in_doubt = False
        self._delivering: Callable[[str], bool] = lambda event_id: False
        # Pending payments as this replica last wrote them (see get_for_update).
        self._pending: dict[str, Payment] = {}

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Send the batched calls until cancelled."""
        await self._ops.run(task_status=task_status)

    async def aclose(self) -> None:
        """Close the batches' connection (``open_redis_store`` does, at its end)."""
        await self._wire.aclose()

    @property
    def batches(self) -> int:
        return self._ops.batches

    @property
    def available(self) -> AsyncBool:
        """False while the store is unreachable (readiness follows it)."""
        return self._ops.available

    def track_deliveries(self, delivering: Callable[[str], bool]) -> None:
        """``delivering(event_id)``: whether a local channel still has that change."""
        self._delivering = delivering

    # -- the PaymentStore port -----------------------------------------------------
    async def insert(self, payment: Payment) -> None:
        await self._ops.call(
            "I",
            payment.payment_intent_id,
            payment.version,
            codec.encode_payment(payment),
            _index_member(payment),
            payment.user_id,
            self._due(payment),
        )
        self._remember(payment)

    async def get(self, payment_intent_id: str) -> Payment | None:
        value = await self._ops.call("G", payment_intent_id)
        return None if value is None else _payment(value)

    async def get_for_update(self, payment_intent_id: str) -> Payment | None:
        """This replica's last write of a pending payment if it has one, else ``get``.

        Saves a round trip and a decode when a timer fires: the compare-and-set
        that follows fails if another replica changed the payment meanwhile.
        """
        cached = self._pending.get(payment_intent_id)
        return cached if cached is not None else await self.get(payment_intent_id)

    def _remember(self, payment: Payment) -> None:
        pending = self._pending
        if payment.status.is_settled:
            pending.pop(payment.payment_intent_id, None)
            return
        pending[payment.payment_intent_id] = payment
        if len(pending) > PENDING_CACHE:
            del pending[next(iter(pending))]  # the oldest entry

    async def compare_and_set(
        self, expected_version: int, new: Payment, change: StatusChange | None = None
    ) -> bool:
        settled = new.status.is_settled
        encoded = codec.encode_payment(new)
        call = self._ops.call(
            "C",
            new.payment_intent_id,
            expected_version,
            new.version,
            encoded,
            self._due(new),
            new.updated_at + self._retention_s if settled else "",
            _index_member(new) if settled else "",
            new.user_id,
            self._retention_ms,
            change.event_id if change is not None else "",
            codec.encode_change_with(change, encoded) if change is not None else "",
        )
        try:
            won = await call
        except LostReply:
            if change is not None:
                self._in_doubt = True  # it may have won: its change waits in the outbox
            raise
        if won:
            self._remember(new)
        else:
            self._pending.pop(new.payment_intent_id, None)
        return bool(won)

    async def claim_idempotency(
        self, user_id: str, key: str, record: IdempotencyRecord, ttl_s: float, now: float
    ) -> IdempotencyRecord | None:
        value = f"{now + ttl_s!r}|".encode() + codec.encode_record(record)
        scope = _scope(user_id, key)
        try:
            existing = await self._ops.call("K", scope, now, value, max(1, round(ttl_s * 1000)))
        except LostReply:
            # It may hold the key now for a request that failed: let it go, unless
            # another request has claimed the key since.
            self._ops.post(lambda: ("X", scope, value))
            raise
        if existing is None:
            return None
        return codec.decode_record(existing.split(b"|", 1)[1])

    async def release_idempotency(self, user_id: str, key: str, unless_created: str = "") -> None:
        scope = _scope(user_id, key)
        try:
            await self._ops.call("R", scope, unless_created)
        except StoreUnavailable:
            self._ops.post(lambda: ("R", scope, unless_created))  # sent once the store is back

    async def complete_idempotency(self, user_id: str, key: str, record: IdempotencyRecord) -> None:
        await self._ops.call("P", _scope(user_id, key), codec.encode_record(record))

    async def user_payments(self, user_id: str) -> Sequence[Payment]:
        values = await self._ops.call("L", user_id)
        return [_payment(v) for v in values]

    async def sweep(self, now: float) -> list[str]:
        dropped = await self._ops.call("S", now, SWEEP_LIMIT)
        return [pid.decode() for pid in dropped]

    # -- sharing with other replicas ---------------------------------------------
    def outbox_done(self, event_id: str) -> None:
        """The change's webhook and event are done: forget it (not awaited).

        The ids are collected and forgotten together, in one op of the next batch.
        """
        if not self._finished:
            self._ops.post(self._take_finished)
        self._finished.append(event_id)

    def _take_finished(self) -> tuple[str, list[str]]:
        ids, self._finished = self._finished, []
        return ("D", ids)

    async def maintain(self, now: float, limit: int = CLAIM_LIMIT) -> Maintenance:
        """Renew the lease, release vanished replicas, claim from the pools."""
        in_doubt = self._in_doubt
        try:
            raw = await self._script(
                self._maintain, self._lease_ms, limit, repr(now - self._lease_ms / 1000)
            )
        except StoreUnavailable:
            self._in_doubt = True  # it may have claimed changes into this outbox
            raise
        lapsed, claimed, changes, own = raw
        found = [codec.decode_change(c) for c in changes]
        if in_doubt:
            found += await self._unheard_changes({c.event_id for c in found})
            self._in_doubt = False
        return Maintenance(
            lapsed=bool(lapsed),
            claimed=[
                (claimed[j].decode(), float(claimed[j + 1])) for j in range(0, len(claimed), 2)
            ],
            changes=found,
            overdue_own=[pid.decode() for pid in own],
        )

    async def _unheard_changes(self, claimed: set[str]) -> list[StatusChange]:
        """The changes in this replica's outbox that no local channel is delivering.

        Read after a write whose answer was lost: a compare-and-set that won
        unheard, or claimed changes of a ``maintain``. A change finished just
        before is not among them: its ``outbox_done`` op was queued earlier,
        so it runs first.
        """
        entries = await self._ops.call("A")
        unheard = []
        for j in range(0, len(entries), 2):
            event_id = entries[j].decode()
            if event_id not in claimed and not self._delivering(event_id):
                unheard.append(codec.decode_change(entries[j + 1]))
        if unheard:
            log.info("announcing changes whose write was not heard", changes=len(unheard))
        return unheard

    async def hand_over(self, *, leave: bool) -> tuple[int, int]:
        """Give this replica's due outcomes to the pool; ``leave``: its outbox too, and go.

        Returns (due outcomes, changes) handed over.
        """
        moved, changes = await self._script(self._hand_over, "1" if leave else "0")
        return int(moved), int(changes)

    async def _script(self, script: Any, *args: Any) -> Any:
        try:
            with trio.fail_after(self.timeout_s):
                result = await script(
                    keys=[self._prefix], args=[self._prefix, self.replica_id, *args]
                )
        except Exception as exc:
            if classify(exc):
                self._ops.unreachable(exc)  # the batcher probes until it answers
            else:
                log.warning("store script failed", error=describe(exc))
            raise StoreUnavailable() from None
        self._ops.reachable()
        return result

    def _due(self, payment: Payment) -> float | str:
        """When the payment's outcome is due, or "" for a settled one (see ``OPS``)."""
        if payment.status.is_settled:
            return ""
        return self._clock.answers_at(payment)


def _payment(value: bytes) -> Payment:
    """From the stored form, ``<version>:<payment_codec bytes>`` (joined by the ops script)."""
    return codec.decode_payment(value.split(b":", 1)[1])


def _index_member(payment: Payment) -> str:
    ns, pid = sort_key(payment)
    return f"{ns:020d}|{pid}"


def _scope(user_id: str, key: str) -> str:
    return f"{user_id}\x00{key}"


@asynccontextmanager
async def open_redis_store(
    settings: StoreSettings, *, retention_s: float, time_scale: float
) -> AsyncIterator[RedisStore]:
    """Connect, check the server answers, and yield the store; close the pool after."""
    assert settings.url is not None
    client = _client(settings)
    failure = ""
    async with client:
        try:
            with trio.fail_after(settings.timeout_s):
                await client.ping()
        except (Exception, trio.TooSlowError) as exc:
            failure = "no answer in time" if isinstance(exc, trio.TooSlowError) else str(exc)
        if not failure:
            store = RedisStore(
                client,
                settings,
                replica_id=settings.replica_id or default_replica_id(),
                retention_s=retention_s,
                time_scale=time_scale,
            )
            log.info("store connected", store=settings.redacted_url, replica_id=store.replica_id)
            try:
                yield store
            finally:
                await store.aclose()
            return
    # Raised out here: inside the client's block it would arrive wrapped in a group.
    raise StoreStartError(f"cannot reach the store at {settings.redacted_url}: {failure[:200]}")


def _client(settings: StoreSettings) -> Any:
    assert settings.url is not None
    kwargs: dict[str, Any] = {
        "decode_responses": False,
        "connect_timeout": settings.timeout_s,
        # No per-command timeout or retry inside coredis: each batch has its own
        # deadline (redis_batch), and a batch must never run twice behind our back
        # (a retried idempotency claim would find its own claim).
        "retry_policy": NoRetryPolicy(),
    }
    if settings.password is not None:
        kwargs["password"] = settings.password
    if settings.url.startswith("rediss://"):
        context = ssl.create_default_context(cafile=settings.tls_ca_file)
        kwargs["ssl_context"] = context
    return coredis.Redis.from_url(settings.url, **kwargs)
