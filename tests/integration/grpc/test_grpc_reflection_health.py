"""Server reflection and the gRPC health protocol, shown with grpcio's own clients.

Reflection: grpcio-reflection's ``ProtoReflectionDescriptorDatabase`` (which
speaks v1alpha) builds a working ``DescriptorPool`` from the server alone;
v1 is driven raw, with v1alpha's message classes (the two are wire-identical).
Health: grpcio-health-checking's ``HealthStub``, Check and Watch.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import trio
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as refl
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.grpc_helpers import (
    CALL_TIMEOUT_S,
    AppHandle,
    call_error,
    check_health,
    open_health_watch,
)

SERVICES = {
    "payment.v1.PaymentService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}
PAYMENT_FILE = "proto/payment/v1/payment.proto"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# -- reflection through grpcio-reflection's descriptor database (v1alpha) ------


async def test_reflection_lists_services(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = await trio.to_thread.run_sync(db.get_services)
    assert set(services) == SERVICES


def _pool_lookups(channel: grpc.Channel) -> dict[str, Any]:
    """Build a DescriptorPool from the server alone; every lookup is a reflection call."""
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service = pool.FindServiceByName("payment.v1.PaymentService")
    create = pool.FindMessageTypeByName("payment.v1.CreatePaymentIntentRequest")
    payment = pool.FindMessageTypeByName("payment.v1.Payment")
    money = pool.FindMessageTypeByName("common.v1.Money")
    status = pool.FindEnumTypeByName("payment.v1.PaymentStatus")
    file = pool.FindFileByName(PAYMENT_FILE)
    return {
        "methods": {
            m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods
        },
        "create_fields": {f.name: f.number for f in create.fields},
        "payment_fields": {f.name: f.number for f in payment.fields},
        "money_fields": {f.name: f.number for f in money.fields},
        "statuses": {v.name: v.number for v in status.values},
        "file": (file.name, file.package, sorted(d.name for d in file.dependencies)),
    }


async def test_reflection_builds_a_descriptor_pool(channel):
    found = await trio.to_thread.run_sync(_pool_lookups, channel)
    assert found["methods"] == {
        "CreatePaymentIntent": (
            "payment.v1.CreatePaymentIntentRequest",
            "payment.v1.CreatePaymentIntentResponse",
        ),
        "ProcessPayment": ("payment.v1.ProcessPaymentRequest", "payment.v1.ProcessPaymentResponse"),
        "GetPaymentStatus": (
            "payment.v1.GetPaymentStatusRequest",
            "payment.v1.GetPaymentStatusResponse",
        ),
        "CancelPayment": ("payment.v1.CancelPaymentRequest", "payment.v1.CancelPaymentResponse"),
        "ListPayments": ("payment.v1.ListPaymentsRequest", "payment.v1.ListPaymentsResponse"),
        "SimulateWebhook": (
            "payment.v1.SimulateWebhookRequest",
            "payment.v1.SimulateWebhookResponse",
        ),
    }
    assert found["create_fields"] == {
        "reservation_id": 1,
        "amount": 2,
        "user_id": 3,
        "method": 4,
        "scenario": 5,
        "webhook_url": 6,
        "idempotency_key": 7,
        "metadata": 8,
    }
    assert found["payment_fields"]["metadata"] == 13
    assert found["payment_fields"]["transaction_id"] == 11
    assert found["money_fields"] == {"amount": 1, "currency": 2}
    assert found["statuses"]["PAYMENT_STATUS_COMPLETED"] == 3
    assert found["statuses"]["PAYMENT_STATUS_FAILED"] == 4
    assert found["file"] == (
        PAYMENT_FILE,
        "payment.v1",
        [
            "google/protobuf/timestamp.proto",
            "proto/common/v1/errors.proto",
            "proto/common/v1/types.proto",
        ],
    )


# -- reflection v1, raw --------------------------------------------------------

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def _reflect_v1(channel: grpc.Channel, requests: list[Any]) -> list[Any]:
    info = channel.stream_stream(
        V1_METHOD,
        request_serializer=refl.ServerReflectionRequest.SerializeToString,
        response_deserializer=refl.ServerReflectionResponse.FromString,
    )
    return list(info(iter(requests), timeout=CALL_TIMEOUT_S))


def _files(response: Any) -> list[descriptor_pb2.FileDescriptorProto]:
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]


async def test_reflection_v1_answers_on_one_stream(channel):
    requests = [
        refl.ServerReflectionRequest(list_services=""),
        refl.ServerReflectionRequest(file_containing_symbol="payment.v1.PaymentService"),
        refl.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        refl.ServerReflectionRequest(file_by_filename="proto/common/v1/types.proto"),
        refl.ServerReflectionRequest(file_containing_symbol="payment.v1.NoSuchThing"),
    ]
    listed, payment, v1_file, types_file, unknown = await trio.to_thread.run_sync(
        _reflect_v1, channel, requests
    )

    assert {s.name for s in listed.list_services_response.service} == SERVICES

    files = _files(payment)
    assert files[0].name == PAYMENT_FILE  # the file itself first, then its imports
    assert {f.name for f in files} >= {
        PAYMENT_FILE,
        "proto/common/v1/types.proto",
        "proto/common/v1/errors.proto",
        "google/protobuf/timestamp.proto",
    }
    create = next(m for m in files[0].message_type if m.name == "CreatePaymentIntentRequest")
    assert {f.name: f.number for f in create.field}["idempotency_key"] == 7
    assert payment.original_request.file_containing_symbol == "payment.v1.PaymentService"

    [v1] = _files(v1_file)
    assert v1.package == "grpc.reflection.v1"
    assert [s.name for s in v1.service] == ["ServerReflection"]

    assert _files(types_file)[0].name == "proto/common/v1/types.proto"

    assert unknown.WhichOneof("message_response") == "error_response"
    assert unknown.error_response.error_code == 5  # NOT_FOUND


# -- health --------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "payment.v1.PaymentService", "grpc.health.v1.Health"])
async def test_health_check_serving(channel, service):
    assert await check_health(channel, service) == SERVING


async def test_health_check_unknown_service_is_not_found(channel):
    from grpc_health.v1 import health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    err = await call_error(stub.Check, health_pb2.HealthCheckRequest(service="nope"))
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_health_watch_streams_serving_first(channel):
    async with open_health_watch(channel) as watch:
        assert await watch.next_status() == SERVING
    assert watch.end_code == [grpc.StatusCode.CANCELLED]  # we ended it


async def test_health_watch_unknown_service(channel):
    async with open_health_watch(channel, "nope") as watch:
        assert await watch.next_status() == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


async def test_health_watch_turns_not_serving_on_shutdown(app: AppHandle, channel):
    async with open_health_watch(channel) as watch:
        assert await watch.next_status() == SERVING
        app.shutdown.set()
        assert await watch.next_status() == NOT_SERVING
        assert not app.stopped.is_set()  # our Watch is still in flight: the app drains
    # Leaving the block cancels the call (grpcio may then also close the connection:
    # see test_app_lifecycle.py for what the drain does then).
    assert watch.end_code == [grpc.StatusCode.CANCELLED]
