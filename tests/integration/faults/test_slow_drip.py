"""Slow-drip answers on the wire: a frame-level peer on virtual time sees the answer arrive
whole in many DATA frames over the configured time, while the connection's other streams
go on; a stock grpcio client whose deadline is shorter than the drip gets DEADLINE_EXCEEDED
for work that was done, and the same idempotency key finds it."""

from __future__ import annotations

from typing import Any, cast

import grpc
import pytest
import trio
from hyperframe.frame import DataFrame, Frame

from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim.benchmarks.h2_peer import FramePeer
from tests.grpc_helpers import call, create_request, payment_stub

CREATE = "/payment.v1.PaymentService/CreatePaymentIntent"
STATUS = "/payment.v1.PaymentService/GetPaymentStatus"


class CountingPeer(FramePeer):
    """A FramePeer that also notes when each DATA frame of each stream arrived."""

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream)
        self.data_at: dict[int, list[tuple[float, int]]] = {}

    def _on(self, frame: Frame) -> None:
        if isinstance(frame, DataFrame) and frame.data:
            at = self.data_at.setdefault(frame.stream_id, [])
            at.append((trio.current_time(), len(frame.data)))
        super()._on(frame)


async def _connect(nursery: trio.Nursery, port: int) -> CountingPeer:
    return cast(CountingPeer, await CountingPeer.connect(nursery, port))


def _answer(peer: FramePeer, sid: int, kind: Any) -> Any:
    seen = peer.seen(sid)
    assert seen.header("grpc-status") == "0", seen.headers
    data = bytes(seen.data)
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == len(data) - 5
    return kind.FromString(data[5:])


async def test_a_dripped_answer_arrives_whole_in_many_frames_without_stalling_others(
    app, nursery, autojump_clock
):
    peer = await _connect(nursery, app.grpc_port)
    started = trio.current_time()
    request = create_request(user_id="u_drip").SerializeToString()
    await peer.call(1, CREATE, request, x_paysim_fault="slow_drip=4:50")
    # A second call on the same connection, while the first drips, answers at once.
    await peer.wait(lambda: len(peer.data_at.get(1, ())) >= 2)
    await peer.call(3, CREATE, create_request(user_id="u_other").SerializeToString())
    await peer.wait(lambda: peer.seen(3).ended, timeout=60)
    assert not peer.seen(1).ended
    other = _answer(peer, 3, pb.CreatePaymentIntentResponse)
    assert other.payment_intent_id
    await peer.wait(lambda: peer.seen(1).ended, timeout=60)
    answer = _answer(peer, 1, pb.CreatePaymentIntentResponse)
    frames = peer.data_at[1]
    size = len(peer.seen(1).data)
    assert [n for _, n in frames] == [4] * (size // 4) + ([size % 4] if size % 4 else [])
    # Each chunk 50 ms after the one before it: the whole answer over (frames - 1) pauses.
    assert frames[-1][0] - frames[0][0] == pytest.approx(0.05 * (len(frames) - 1))
    assert trio.current_time() - started >= 0.05 * (len(frames) - 1)
    # The answer is a real payment, readable on the same connection.
    ask = pb.GetPaymentStatusRequest(payment_intent_id=answer.payment_intent_id)
    await peer.call(5, STATUS, ask.SerializeToString())
    await peer.wait(lambda: peer.seen(5).ended)
    assert _answer(peer, 5, pb.GetPaymentStatusResponse).payment.payment_intent_id == (
        answer.payment_intent_id
    )
    await peer.aclose()


async def test_a_reset_stream_ends_its_drip_and_the_ledger_keeps_the_answer_lost(
    app, admin, nursery, autojump_clock
):
    peer = await _connect(nursery, app.grpc_port)
    request = create_request(user_id="u_rst").SerializeToString()
    await peer.call(1, CREATE, request, x_paysim_fault="slow_drip=2:1000")
    await peer.wait(lambda: len(peer.data_at.get(1, ())) >= 2)
    await peer.send(peer.rst(1))
    await trio.sleep(30)  # far longer than the rest of the drip would have taken
    frames = len(peer.data_at[1])
    assert frames <= 3  # at most one chunk was already on its way
    assert not peer.seen(1).ended
    report = (await admin.get("/reconciliation")).json()["lost_answers"]
    assert report["by_rpc"] == {"CreatePaymentIntent": {"lost": 1, "recovered": 0}}
    await peer.aclose()


async def test_a_deadline_shorter_than_the_drip_is_deadline_exceeded_for_work_done(app, admin):
    request = create_request(user_id="u_late", idempotency_key="order-drip")
    with payment_stub(app.grpc_port) as stub:
        with pytest.raises(grpc.RpcError) as info:
            # About 150 bytes, 1 byte every 5 ms: some 0.75 s; the caller waits 0.2 s.
            await call(
                stub.CreatePaymentIntent,
                request,
                metadata=[("x-paysim-fault", "slow_drip=1:5")],
                timeout=0.2,
            )
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        listed = await call(stub.ListPayments, pb.ListPaymentsRequest(user_id="u_late"))
        (payment,) = listed.payments
        lost = (await admin.get("/reconciliation")).json()["lost_answers"]
        assert lost["unrecovered_sample"] == [payment.payment_intent_id]
        again = await call(stub.CreatePaymentIntent, request)
        assert again.payment_intent_id == payment.payment_intent_id
        status = await call(
            stub.GetPaymentStatus,
            pb.GetPaymentStatusRequest(payment_intent_id=payment.payment_intent_id),
        )
        assert status.payment.payment_intent_id == payment.payment_intent_id
    assert (await admin.get("/reconciliation")).json()["lost_answers"]["recovered"] == 1
    metrics = (await admin.get("/metrics")).text
    assert (
        'paysim_api_faults_total{code="OK",kind="slow_drip_targeted",'
        'rpc="CreatePaymentIntent"} 1.0' in metrics
    )
