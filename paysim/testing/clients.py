"""gRPC clients for a simulator under test, built from paysim's generated code.

* trio tests: ``sim.client`` is a ``PaymentServiceStub`` of purerpc (a
  runtime dependency of paysim) on a channel the simulator opened and closes;
  its calls are ``await sim.client.CreatePaymentIntent(request)``.
* synchronous code: ``grpc_stub(target)`` (grpcio, ``pip install grpcio``)
  returns a stub and its channel; the caller closes the channel. Never call a
  synchronous stub from the trio loop that runs the simulator: the loop would
  wait for itself. Use it with ``paysim.testing.running()``.
* asyncio code: ``aio_stub(target)``, the same with ``grpc.aio``; create it
  inside the running asyncio loop and ``await channel.close()``.

The messages are ``paysim.testing.pb`` (``payment_pb2``) and
``paysim.testing.types_pb`` (``Money``).
"""

from __future__ import annotations

from typing import Any

# An environment's HTTP proxy must never see loopback calls.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def grpc_stub(target: str) -> tuple[Any, Any]:
    """A grpcio ``PaymentServiceStub`` on a new channel to ``target``: ``(stub, channel)``."""
    import grpc

    from paysim._proto.proto.payment.v1 import payment_pb2_grpc

    channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return payment_pb2_grpc.PaymentServiceStub(channel), channel


def aio_stub(target: str) -> tuple[Any, Any]:
    """A ``grpc.aio`` ``PaymentServiceStub`` on a new channel: ``(stub, channel)``.

    Call it inside the asyncio loop that will use it.
    """
    import grpc

    from paysim._proto.proto.payment.v1 import payment_pb2_grpc

    channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    return payment_pb2_grpc.PaymentServiceStub(channel), channel
