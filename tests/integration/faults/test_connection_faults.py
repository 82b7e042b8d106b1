"""Connection-level faults, seen by a stock grpcio client: GOAWAY storms lose no call;
a reset ends the calls in flight on that connection with UNAVAILABLE."""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Any

import grpc
import trio

from paysim.config import Settings
from paysim.faults.connections import ConnectionFaults
from tests.grpc_helpers import create_request, payment_stub
from tests.integration.faults.conftest import chaos_settings


def _settings(**faults: float) -> Settings:
    base = chaos_settings()
    chaos = dataclasses.replace(base.api_chaos, connections=ConnectionFaults(**faults))
    return dataclasses.replace(base, api_chaos=chaos)


def _injected(handle: Any, kind: str) -> float:
    text = handle.running.metrics.render()[0].decode()
    found = re.search(rf'paysim_api_faults_total{{code="\w+",kind="{kind}",rpc="\*"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def _calls(port: int, n: int) -> list[str]:
    """``n`` creates on one channel, each held 20 ms by the server; the codes seen."""
    codes = []
    with payment_stub(port) as stub:
        for i in range(n):
            try:
                stub.CreatePaymentIntent(
                    create_request(reservation_id=f"rsv_{i}"),
                    metadata=[("x-paysim-fault", "latency=20")],
                    timeout=10,
                )
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
    return codes


async def test_a_goaway_storm_makes_callers_reconnect_and_loses_no_call(start_app):
    handle = await start_app(_settings(goaway_every_s=0.05))
    codes = await trio.to_thread.run_sync(_calls, handle.grpc_port, 40)
    assert collections.Counter(codes) == {"OK": 40}
    assert _injected(handle, "goaway") >= 3


def _slow_call(port: int) -> str:
    with payment_stub(port) as stub:
        try:
            stub.CreatePaymentIntent(
                create_request(), metadata=[("x-paysim-fault", "latency=5000")], timeout=10
            )
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return "OK"


async def test_a_reset_ends_the_calls_in_flight_unanswered(start_app):
    handle = await start_app(_settings(reset_every_s=0.05))
    with trio.fail_after(4):  # well before the call's own 5 s
        code = await trio.to_thread.run_sync(_slow_call, handle.grpc_port)
    assert code == "UNAVAILABLE"
    assert _injected(handle, "reset") >= 1


async def test_no_connection_fault_without_the_settings(start_app):
    handle = await start_app(chaos_settings())
    codes = await trio.to_thread.run_sync(_calls, handle.grpc_port, 5)
    assert codes == ["OK"] * 5
    assert _injected(handle, "goaway") == 0
