"""The yardstick: a bare ``grpc.aio`` server answering CreatePaymentIntent with a constant.

Run as ``python -m paysim.benchmarks.aio_baseline PORT``. It does no work at
all per call, so it measures what the gRPC layer alone costs on this machine.
Needs ``grpcio`` (a dev dependency).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc

from paysim._proto.proto.payment.v1 import payment_pb2, payment_pb2_grpc

_REPLY = payment_pb2.CreatePaymentIntentResponse(
    payment_intent_id="pay_000000000000000000000000",
    status=payment_pb2.PAYMENT_STATUS_PENDING,
    client_secret="pay_000000000000000000000000_secret_xxxxxxxxxxxxxxxxxxxxxxxx",
)


class _Constant(payment_pb2_grpc.PaymentServiceServicer):  # type: ignore[misc]
    async def CreatePaymentIntent(self, request: Any, context: Any) -> Any:
        return _REPLY


async def _serve(port: int) -> None:
    server = grpc.aio.server()
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(_Constant(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def main() -> None:
    asyncio.run(_serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
