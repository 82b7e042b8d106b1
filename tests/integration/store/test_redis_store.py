"""What only the Redis store does: leases, takeover, handover, the outbox, batching,
errors, auth. A real ``redis-server`` (``redis_fixtures``); the batcher's
cancellation rules also with a stand-in script, to hold a batch on the wire.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import coredis.exceptions
import msgpack
import pytest
import trio
import trio.testing

from paysim import parking
from paysim.adapters import payment_codec as codec
from paysim.adapters.redis_batch import OpBatcher, decode_results, encode_ops
from paysim.adapters.redis_store import RedisStore, StoreStartError, open_redis_store
from paysim.config import StoreSettings
from paysim.domain.listing import sort_key
from paysim.domain.models import PaymentStatus, StatusChange
from paysim.errors import StoreUnavailable
from tests.integration.delivery.test_http1_client import self_signed_certificate
from tests.redis_fixtures import (  # noqa: F401 - fixtures
    redis_server,
    redis_settings,
    start_redis,
)
from tests.unit.domain.test_domain import make_payment

S = PaymentStatus
T0 = 1_764_000_000.0
OpenStore = Callable[..., AbstractAsyncContextManager[RedisStore]]


@pytest.fixture
def open_store(redis_settings: StoreSettings, nursery: trio.Nursery) -> OpenStore:  # noqa: F811
    """``async with open_store("replica-b") as store``: a replica on this test's keys."""

    @asynccontextmanager
    async def open_(replica: str, **changes: Any) -> AsyncIterator[RedisStore]:
        settings = dataclasses.replace(redis_settings, replica_id=replica, **changes)
        async with open_redis_store(settings, retention_s=60.0, time_scale=1.0) as store:
            await nursery.start(store.run)
            yield store

    return open_


def pending(n: int, delay_s: float = 2.0) -> Any:
    p = make_payment(
        payment_intent_id=f"pay_{n:04d}", created_at=T0 + n, updated_at=T0 + n, expires_at=T0 + 900
    )
    return dataclasses.replace(p, outcome=dataclasses.replace(p.outcome, delay_s=delay_s))


def resolved(p: Any, status: PaymentStatus = S.COMPLETED) -> Any:
    return dataclasses.replace(p, status=status, updated_at=p.updated_at + 2, version=p.version + 1)


async def expire_lease(settings: StoreSettings, replica: str) -> None:
    """What a vanished replica looks like: its lease ended (no real waiting)."""
    client = coredis.Redis.from_url(settings.url or "", decode_responses=True)
    async with client:
        await client.zadd("{" + settings.key_prefix + "}:replicas", {replica: 0})


async def test_a_vanished_replicas_due_payments_are_claimed_once(
    open_store: OpenStore,
    redis_settings: StoreSettings,  # noqa: F811
) -> None:
    async with open_store("doomed") as doomed, open_store("a") as a, open_store("b") as b:
        await doomed.maintain(T0)
        for n in range(300):
            await doomed.insert(pending(n))
        # Settled before it vanished: never claimed.
        done = pending(999)
        await doomed.insert(done)
        assert await doomed.compare_and_set(done.version, resolved(done))
        assert (await a.maintain(T0)).claimed == []  # the doomed lease still runs
        await expire_lease(redis_settings, "doomed")
        # Two survivors race; each payment goes to exactly one, with its due time.
        found = []
        async with trio.open_nursery() as race:
            for survivor in (a, b) * 3:

                async def grab(s: RedisStore = survivor) -> None:
                    found.append(await s.maintain(T0, limit=100))

                race.start_soon(grab)
        claimed = [c for f in found for c in f.claimed]
        assert sorted(claimed) == sorted((f"pay_{n:04d}", T0 + n + 2.0) for n in range(300))


async def test_stored_forms_are_those_the_key_table_names(
    open_store: OpenStore,
    redis_settings: StoreSettings,  # noqa: F811
) -> None:
    # The ops script joins them from separate fields (redis_scripts.OPS); replicas
    # of other releases read the same keys, so the forms must not drift.
    p = pending(1)
    done = resolved(p)
    async with open_store("a") as store:
        await store.insert(p)
        assert await store.compare_and_set(p.version, done)
    prefix = "{" + redis_settings.key_prefix + "}"
    client = coredis.Redis.from_url(redis_settings.url or "", decode_responses=False)
    async with client:
        stored = await client.get(f"{prefix}:p:pay_0001")
        retention = await client.zrange(f"{prefix}:r", 0, -1)
    assert stored == b"2:" + codec.encode_payment(done)
    ns, pid = sort_key(done)
    assert list(retention) == [f"{ns:020d}|{pid}|{done.user_id}".encode()]


async def test_due_and_drop_times_are_kept_to_the_last_bit(open_store: OpenStore) -> None:
    # Times go to the script as MessagePack floats (see redis_scripts.OPS): what
    # comes back, and where a sweep draws its line, is exactly the float sent.
    created = T0 + 1 / 3
    p = dataclasses.replace(pending(1, delay_s=2.123456789), created_at=created)
    async with open_store("leaving") as leaving, open_store("a") as a:
        await leaving.maintain(T0)
        await leaving.insert(p)
        await leaving.hand_over(leave=False)
        assert (await a.maintain(T0)).claimed == [("pay_0001", created + 2.123456789)]
        done = dataclasses.replace(resolved(p), updated_at=created + 7 / 3)
        assert await a.compare_and_set(p.version, done)
        drop_at = done.updated_at + 60.0  # open_store's retention
        assert await a.sweep(math.nextafter(drop_at, 0.0)) == []
        assert await a.sweep(drop_at) == ["pay_0001"]


async def test_undelivered_changes_move_with_their_event_id(
    open_store: OpenStore,
    redis_settings: StoreSettings,  # noqa: F811
) -> None:
    async with open_store("doomed") as doomed, open_store("a") as a:
        await doomed.maintain(T0)
        changes = []
        for n in range(3):
            p = pending(n)
            await doomed.insert(p)
            change = StatusChange(f"evt_{n}", resolved(p), S.PENDING, T0 + n + 2)
            assert await doomed.compare_and_set(p.version, change.payment, change)
            changes.append(change)
        doomed.outbox_done("evt_1")  # delivered: forgotten
        await doomed.get("pay_0000")  # the posted op went out before this one returned
        await expire_lease(redis_settings, "doomed")
        found = await a.maintain(T0)
        assert sorted(found.changes, key=lambda c: c.event_id) == [changes[0], changes[2]]
        assert (await a.maintain(T0)).changes == []  # claimed once


async def test_a_draining_replica_hands_over_without_waiting_for_its_lease(
    open_store: OpenStore,
) -> None:
    async with open_store("leaving") as leaving, open_store("a") as a:
        await leaving.maintain(T0)
        p = pending(1)
        await leaving.insert(p)
        change = StatusChange("evt_x", resolved(pending(2)), S.PENDING, T0)
        await leaving.insert(pending(2))
        await leaving.compare_and_set(1, change.payment, change)
        assert await leaving.hand_over(leave=False) == (1, 0)
        assert (await a.maintain(T0)).claimed == [("pay_0001", T0 + 3.0)]
        assert await leaving.hand_over(leave=True) == (0, 1)
        assert (await a.maintain(T0)).changes == [change]


async def test_resolving_a_payment_takes_it_off_the_due_list(open_store: OpenStore) -> None:
    async with open_store("owner") as owner, open_store("other") as other:
        await owner.maintain(T0)
        p = pending(1)
        await owner.insert(p)
        # Resolved through another replica; then its owner hands over: nothing is due.
        assert await other.compare_and_set(p.version, resolved(p))
        assert await owner.hand_over(leave=False) == (0, 0)


async def test_own_overdue_payments_no_timer_knows_are_named(open_store: OpenStore) -> None:
    async with open_store("me", lease_s=5.0) as me:
        await me.insert(pending(1, delay_s=2.0))
        assert (await me.maintain(T0 + 3 + 4.9)).overdue_own == []  # not a lease past due
        assert (await me.maintain(T0 + 3 + 5.1)).overdue_own == ["pay_0001"]


async def test_a_lapsed_lease_is_reported(
    open_store: OpenStore,
    redis_settings: StoreSettings,  # noqa: F811
) -> None:
    async with open_store("me") as me:
        assert (await me.maintain(T0)).lapsed  # first time: no lease yet
        assert not (await me.maintain(T0)).lapsed
        await expire_lease(redis_settings, "me")
        assert (await me.maintain(T0)).lapsed


async def test_get_for_update_is_this_replicas_last_write(open_store: OpenStore) -> None:
    async with open_store("a") as a, open_store("b") as b:
        p = pending(1)
        await a.insert(p)
        assert await a.get_for_update("pay_0001") == p
        processing = dataclasses.replace(p, status=S.PROCESSING, version=2)
        assert await b.compare_and_set(1, processing)
        stale = await a.get_for_update("pay_0001")
        assert stale is not None
        assert stale == p  # a version behind: the compare-and-set finds out
        assert not await a.compare_and_set(stale.version, resolved(stale))
        assert await a.get_for_update("pay_0001") == processing  # fetched again


async def test_a_store_that_stops_answering_raises_store_unavailable(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    server = start_redis(tmp_path)
    settings = StoreSettings(url=server.url, key_prefix="x", replica_id="r", timeout_s=1.0)
    async with open_redis_store(settings, retention_s=60, time_scale=1.0) as store:
        await nursery.start(store.run)
        await store.insert(pending(1))
        server.stop()
        with pytest.raises(StoreUnavailable) as caught:
            await store.get("pay_0001")
        assert caught.value.message == "the payment store is unavailable; retry"
        with pytest.raises(StoreUnavailable):
            await store.maintain(T0)


async def test_auth_with_a_password_from_its_own_setting(tmp_path: Path) -> None:
    server = start_redis(tmp_path, password="s3cret-pw")
    try:
        base = StoreSettings(url=server.url, key_prefix="x", replica_id="r", timeout_s=2.0)
        with pytest.raises(StoreStartError) as refused:
            async with open_redis_store(base, retention_s=60, time_scale=1.0):
                pass
        assert "s3cret-pw" not in str(refused.value)
        assert f"127.0.0.1:{server.port}" in str(refused.value)
        wrong = f"redis://:wrong-pw@127.0.0.1:{server.port}/0"
        with pytest.raises(StoreStartError) as refused:
            async with open_redis_store(
                dataclasses.replace(base, url=wrong), retention_s=60, time_scale=1.0
            ):
                pass
        assert "wrong-pw" not in str(refused.value)
        good = dataclasses.replace(base, password="s3cret-pw")
        async with (
            open_redis_store(good, retention_s=60, time_scale=1.0) as store,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(store.run)
            await store.insert(pending(1))
            assert await store.get("pay_0001") == pending(1)
            nursery.cancel_scope.cancel()
    finally:
        server.stop()


async def test_nothing_listening_is_a_start_error(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    server.stop()
    settings = StoreSettings(url=server.url, key_prefix="x", replica_id="r", timeout_s=1.0)
    with pytest.raises(StoreStartError, match=r"cannot reach the store at redis://127\.0\.0\.1"):
        async with open_redis_store(settings, retention_s=60, time_scale=1.0):
            pass


# -- the batcher, with a stand-in script ---------------------------------------------


def unpack(packed: bytes) -> list[list[Any]]:
    """The ops ``redis_batch.encode_ops`` wrote, each a list of its fields, bytes as text."""
    ops: list[list[Any]] = msgpack.unpackb(packed, raw=False)
    return ops


def test_ops_are_encoded_as_lists_of_fields_with_bytes_as_str() -> None:
    packed = encode_ops([("C", 7, "", "a:b", "é".encode()), ("D", ["e1", "e2"])])
    assert packed == msgpack.packb(
        [["C", 7, "", "a:b", "é"], ["D", ["e1", "e2"]]], use_bin_type=False
    )
    assert b"\xc4" not in packed  # no MessagePack bin type: Redis's cmsgpack rejects it
    assert unpack(packed) == [["C", 7, "", "a:b", "é"], ["D", ["e1", "e2"]]]


def test_results_are_read_from_one_messagepack_array_with_false_as_none() -> None:
    # As the ops script packs them: strings as str, Lua's false for a missing key.
    reply = msgpack.packb([1, 0, False, "a:b", ["x", "y"], []], use_bin_type=False)
    assert decode_results(reply) == [1, 0, None, b"a:b", [b"x", b"y"], []]


def packed_results(results: list[Any]) -> bytes:
    """A reply of the ops script: its results as one MessagePack array (strings as str)."""
    packed: bytes = msgpack.packb(results, use_bin_type=False)
    return packed


class HeldScript:
    """Records each batch's ops and answers only when the test releases it."""

    def __init__(self) -> None:
        self.sent: list[list[Any]] = []
        self.release = trio.Event()
        self.on_wire = 0

    async def __call__(self, *, keys: list[str], args: list[Any]) -> bytes:
        self.sent.append(unpack(args[2]))
        self.on_wire += 1
        await self.release.wait()
        return packed_results([f"r:{op[0]}" for op in unpack(args[2])])


async def test_a_caller_cancelled_before_its_op_left_withdraws_it(nursery: trio.Nursery) -> None:
    script = HeldScript()
    batcher = OpBatcher(script, ("{p}", "me"), timeout_s=30)
    await nursery.start(batcher.run)
    results: dict[str, Any] = {}

    async def run(op: str) -> None:
        results[op] = await batcher.call("G", op)

    nursery.start_soon(run, "first")
    await trio.testing.wait_all_tasks_blocked()
    assert script.on_wire == 1  # the sender is busy: the next ops wait in the queue
    nursery.start_soon(run, "second")
    await trio.testing.wait_all_tasks_blocked()
    third = trio.CancelScope()

    async def run_third() -> None:
        with third:
            await run("third")

    nursery.start_soon(run_third)
    await trio.testing.wait_all_tasks_blocked()
    third.cancel()  # still queued: withdrawn
    withdrawn = trio.CancelScope()
    withdrawn.cancel()
    with withdrawn:
        await batcher.call("G", "fourth")  # cancelled at once: never queued as live
    nursery.start_soon(run, "fifth")
    await trio.testing.wait_all_tasks_blocked()
    script.release.set()
    await trio.testing.wait_all_tasks_blocked()
    # Second batch: what waited while the first was on the wire, less what was withdrawn.
    assert script.sent == [[["G", "first"]], [["G", "second"], ["G", "fifth"]]]
    assert results == {"first": b"r:G", "second": b"r:G", "fifth": b"r:G"}


async def test_a_caller_cancelled_after_its_op_left_leaves_it_running(
    nursery: trio.Nursery,
) -> None:
    script = HeldScript()
    batcher = OpBatcher(script, ("{p}", "me"), timeout_s=30)
    await nursery.start(batcher.run)
    with trio.move_on_after(1) as scope:
        nursery.start_soon(batcher.call, "G", "x")
        await trio.testing.wait_all_tasks_blocked()
        assert script.sent == [[["G", "x"]]]
        scope.cancel()
    script.release.set()
    assert script.sent == [[["G", "x"]]]


async def test_a_batch_that_fails_fails_each_of_its_ops(nursery: trio.Nursery) -> None:
    async def broken(*, keys: list[str], args: list[Any]) -> list[Any]:
        raise ConnectionError("connection reset")

    batcher = OpBatcher(broken, ("{p}", "me"), timeout_s=30)
    await nursery.start(batcher.run)
    with pytest.raises(StoreUnavailable):
        await batcher.call("G", "x")


async def test_a_value_that_cannot_be_encoded_fails_its_batch_not_the_sender(
    nursery: trio.Nursery,
) -> None:
    script = HeldScript()
    script.release.set()
    batcher = OpBatcher(script, ("{p}", "me"), timeout_s=30)
    await nursery.start(batcher.run)
    with pytest.raises(StoreUnavailable):
        await batcher.call("S", "now", 2**64)  # beyond MessagePack's integers
    assert await batcher.call("G", "x") == b"r:G"  # the sender still runs


async def test_a_reply_that_cannot_be_read_fails_its_batch_not_the_sender(
    nursery: trio.Nursery,
) -> None:
    replies = [b"\xc1", packed_results(["fine"])]  # 0xc1: never used in MessagePack

    async def script(*, keys: list[str], args: list[Any]) -> bytes:
        return replies.pop(0)

    batcher = OpBatcher(script, ("{p}", "me"), timeout_s=30)
    await nursery.start(batcher.run)
    with pytest.raises(StoreUnavailable):
        await batcher.call("G", "x")
    assert await batcher.call("G", "x") == b"fine"


@pytest.mark.parametrize("trap", ["trio's private trap", "trio's public API"])
async def test_each_caller_gets_its_own_result_or_failure_on_either_parking_path(
    trap: str, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller parks on its op, which is also what wakes it (``paysim.parking``):
    # the same on trio's public ``wait_task_rescheduled``, the fallback path.
    if trap == "trio's public API":
        monkeypatch.setattr(parking, "_trap", None)
    script = HeldScript()
    script.release.set()
    batcher = OpBatcher(script, ("{p}", "me"), timeout_s=30)
    await nursery.start(batcher.run)
    results: dict[str, Any] = {}

    async def run(key: str, *args: Any) -> None:
        results[key] = await batcher.call(*args)

    async with trio.open_nursery() as callers:
        callers.start_soon(run, "get", "G", "x")
        callers.start_soon(run, "list", "L", "u")
    assert results == {"get": b"r:G", "list": b"r:L"}
    with pytest.raises(StoreUnavailable):
        await batcher.call("S", "now", 2**64)  # cannot be encoded: its batch fails


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and its key, as files."""
    cert_pem, key_pem = self_signed_certificate()
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    return cert_path, key_path


async def test_tls_with_a_ca_file(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = start_redis(tmp_path, tls=(cert, key), password="pw")
    try:
        url = f"rediss://localhost:{server.port}/0"
        settings = StoreSettings(
            url=url, password="pw", tls_ca_file=str(cert), key_prefix="x", replica_id="r"
        )
        async with (
            open_redis_store(settings, retention_s=60, time_scale=1.0) as store,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(store.run)
            await store.insert(pending(1))
            assert await store.get("pay_0001") == pending(1)
            nursery.cancel_scope.cancel()
        # Without the CA the server's certificate is not trusted: refused, no downgrade.
        untrusted = dataclasses.replace(settings, tls_ca_file=None, timeout_s=2.0)
        with pytest.raises(StoreStartError):
            async with open_redis_store(untrusted, retention_s=60, time_scale=1.0):
                pass
        # Plain TCP to a TLS port does not work either.
        plain = dataclasses.replace(settings, url=url.replace("rediss", "redis"), timeout_s=2.0)
        with pytest.raises(StoreStartError):
            async with open_redis_store(plain, retention_s=60, time_scale=1.0):
                pass
    finally:
        server.stop()


class LosesNextReply:
    """The ops script, except that the next batch runs and then its answer is lost."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.armed = True

    async def __call__(self, **kwargs: Any) -> Any:
        result = await self.script(**kwargs)
        if self.armed:
            self.armed = False
            raise coredis.exceptions.ConnectionError("connection lost")
        return result


async def test_a_compare_and_set_that_won_unheard_is_announced_after_the_outage(
    open_store: OpenStore,
) -> None:
    async with open_store("a") as store:
        await store.maintain(T0)
        p = pending(1)
        await store.insert(p)
        done = resolved(p)
        change = StatusChange("evt_unheard", done, S.PENDING, T0 + 3)
        lossy = LosesNextReply(store._ops._script)
        store._ops._script = lossy
        with pytest.raises(StoreUnavailable):
            await store.compare_and_set(p.version, done, change)
        with trio.fail_after(5):
            await store.available.wait_value(True)  # the sender's probe found it back
        assert not await store.compare_and_set(p.version, done, change)  # it did win
        found = await store.maintain(T0 + 4)
        assert [c.event_id for c in found.changes] == ["evt_unheard"]
        # Only once: a change a local channel delivers is not handed back again.
        store.track_deliveries(lambda event_id: event_id == "evt_unheard")
        assert (await store.maintain(T0 + 5)).changes == []


async def test_an_idempotency_claim_whose_answer_was_lost_is_released(
    open_store: OpenStore,
) -> None:
    from paysim.ports import IdempotencyRecord

    async with open_store("a") as store:
        record = IdempotencyRecord("fp", "pay_1")
        store._ops._script = LosesNextReply(store._ops._script)
        with pytest.raises(StoreUnavailable):
            await store.claim_idempotency("u", "k", record, 60.0, T0)
        with trio.fail_after(5):
            await store.available.wait_value(True)
        # The next batch releases it first: a retry of the request claims the key anew.
        assert await store.claim_idempotency("u", "k", record, 60.0, T0 + 1) is None
