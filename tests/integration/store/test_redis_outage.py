"""A Redis outage is weather: the app keeps running, answers UNAVAILABLE, turns
not ready, and recovers by itself with nothing acknowledged lost.

A real ``redis-server`` (durable: every write in its append-only file before
it answers) is killed with SIGKILL while the real app (``paysim.app.run``,
through the ``start_app`` fixture) runs on it, then started again on the same
port with its data. Real time cannot be avoided (a real process), so the
settings keep it short and every wait is a condition polled under a deadline.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import trio

from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim.config import Settings, StoreSettings
from paysim.domain.models import PaymentStatus
from tests.e2e.test_app_lifecycle import http_get
from tests.grpc_helpers import (
    AppHandle,
    StartApp,
    call,
    call_error,
    create_request,
    make_settings,
    payment_stub,
)
from tests.redis_fixtures import RedisProcess, start_redis

DELAY_S = 1.0  # the PG answers 1 s after each create: during the outage
WAIT_S = 10.0  # the bound on every wait below (they take well under a second)


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = start_redis(tmp_path, durable=True)
    yield server
    server.stop()


def outage_settings(redis: RedisProcess, replica: str, prefix: str, **store: float) -> Settings:
    settings = make_settings(default_delay_s=DELAY_S, sweep_interval_s=0.05)
    return dataclasses.replace(
        settings,
        store=StoreSettings(
            url=redis.url,
            key_prefix=prefix,
            replica_id=replica,
            timeout_s=1.0,
            lease_s=store.get("lease_s", 2.0),
            takeover_interval_s=0.1,
        ),
        pending_on_shutdown="resolve",
    )


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    with trio.fail_after(WAIT_S):
        while not condition():  # noqa: ASYNC110 - another process changes it
            await trio.sleep(0.01)  # polling a condition another process changes


async def wait_ready(app: AppHandle, ready: bool) -> None:
    with trio.fail_after(WAIT_S):
        while (await http_get(app.http_port, "/readyz"))[0] != (200 if ready else 503):  # noqa: ASYNC110
            await trio.sleep(0.01)


def resolved(app: AppHandle, ids: list[str]) -> bool:
    settled = {
        c.payment.payment_intent_id for c in app.notifier.changes if c.payment.status.is_settled
    }
    return settled >= set(ids)


async def create_some(port: int, count: int) -> list[str]:
    with payment_stub(port) as stub:
        return [
            (await call(stub.CreatePaymentIntent, create_request())).payment_intent_id
            for _ in range(count)
        ]


async def test_the_app_outlives_an_outage_and_resolves_what_it_acknowledged(
    start_app: StartApp, durable_redis: RedisProcess
) -> None:
    app = await start_app(outage_settings(durable_redis, "a", f"t{uuid.uuid4().hex[:10]}"))
    acknowledged = await create_some(app.grpc_port, 5)
    durable_redis.kill()

    # Not ready while Redis is away (the sweeper, every 50 ms, finds it so).
    await wait_ready(app, False)
    with payment_stub(app.grpc_port) as stub:
        error = await call_error(stub.CreatePaymentIntent, create_request())
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "retry" in (error.details() or "")
        error = await call_error(
            stub.GetPaymentStatus, pb.GetPaymentStatusRequest(payment_intent_id=acknowledged[0])
        )
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    # The timers fire during the outage, fail, and wait to try again.
    simulator = app.running.simulator
    await wait_until(lambda: simulator.retrying == len(acknowledged), "timers retrying")
    assert simulator.pending_ids()  # still owed, not dropped

    durable_redis.restart()
    await wait_ready(app, True)
    await wait_until(lambda: resolved(app, acknowledged), "acknowledged payments resolved")
    with payment_stub(app.grpc_port) as stub:
        for pid in acknowledged:
            got = await call(
                stub.GetPaymentStatus, pb.GetPaymentStatusRequest(payment_intent_id=pid)
            )
            assert got.payment.status == pb.PAYMENT_STATUS_COMPLETED
        # And it takes new work again.
        again = await create_some(app.grpc_port, 1)
    assert again
    assert not app.stopped.is_set()
    assert app.failure is None


async def test_after_an_outage_longer_than_the_lease_each_outcome_is_applied_once(
    start_app: StartApp, durable_redis: RedisProcess
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    a = await start_app(outage_settings(durable_redis, "a", prefix, lease_s=0.3))
    b = await start_app(outage_settings(durable_redis, "b", prefix, lease_s=0.3))
    on_a = await create_some(a.grpc_port, 4)
    on_b = await create_some(b.grpc_port, 4)
    durable_redis.kill()
    await wait_ready(a, False)
    await wait_ready(b, False)
    # Both leases end during the outage (0.3 s); the timers (1 s) fire during it too.
    await wait_until(lambda: a.running.simulator.retrying == 4, "a's timers retrying")
    await wait_until(lambda: b.running.simulator.retrying == 4, "b's timers retrying")
    durable_redis.restart()
    await wait_ready(a, True)
    await wait_ready(b, True)
    both = on_a + on_b
    await wait_until(
        lambda: (
            {c.payment.payment_intent_id for h in (a, b) for c in h.notifier.changes} >= set(both)
        ),
        "every payment resolved",
    )
    for pid in both:
        changes = [c for h in (a, b) for c in h.notifier.for_payment(pid)]
        # One outcome, applied once: a takeover may announce it again, under its one id.
        assert {c.event_id for c in changes} == {changes[0].event_id}
        assert changes[0].payment.status is PaymentStatus.COMPLETED
    assert a.failure is None
    assert b.failure is None
