"""The generated code in paysim/_proto is fresh and matches the wire contract.

The tables below are copied from /work/shared/CONTRACT.md section 1 (the gRPC
contract clients are compiled against); they are checked against the
descriptors of the generated modules, so a proto edit that breaks the contract
fails here even if the generated code was regenerated.
"""

from __future__ import annotations

import purerpc
import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from paysim import protogen
from paysim._proto.proto.common.v1 import errors_pb2, types_pb2
from paysim._proto.proto.payment.v1 import payment_pb2

# --- contract data -------------------------------------------------------------------------

T = FieldDescriptor
STRING, INT32, INT64, BOOL = T.TYPE_STRING, T.TYPE_INT32, T.TYPE_INT64, T.TYPE_BOOL
MSG, ENUM = T.TYPE_MESSAGE, T.TYPE_ENUM
TS = "google.protobuf.Timestamp"
MONEY = "common.v1.Money"
ERROR = "common.v1.Error"
P = "payment.v1."

FILES = {
    "payment": (payment_pb2, "proto/payment/v1/payment.proto", "payment.v1"),
    "types": (types_pb2, "proto/common/v1/types.proto", "common.v1"),
    "errors": (errors_pb2, "proto/common/v1/errors.proto", "common.v1"),
}

SERVICE = "payment.v1.PaymentService"
METHODS = {
    "CreatePaymentIntent": ("CreatePaymentIntentRequest", "CreatePaymentIntentResponse"),
    "ProcessPayment": ("ProcessPaymentRequest", "ProcessPaymentResponse"),
    "GetPaymentStatus": ("GetPaymentStatusRequest", "GetPaymentStatusResponse"),
    "CancelPayment": ("CancelPaymentRequest", "CancelPaymentResponse"),
    "ListPayments": ("ListPaymentsRequest", "ListPaymentsResponse"),
    "SimulateWebhook": ("SimulateWebhookRequest", "SimulateWebhookResponse"),
}

# A field spec is (name, number, type) or (name, number, type, full name of message/enum type),
# optionally followed by "repeated" or "map".
Field = tuple[object, ...]
MESSAGES: dict[str, list[Field]] = {
    P + "CreatePaymentIntentRequest": [
        ("reservation_id", 1, STRING),
        ("amount", 2, MSG, MONEY),
        ("user_id", 3, STRING),
        ("method", 4, ENUM, P + "PaymentMethod"),
        ("scenario", 5, ENUM, P + "PaymentScenario"),
        ("webhook_url", 6, STRING),
        ("idempotency_key", 7, STRING),
        ("metadata", 8, MSG, P + "PaymentMetadata"),
    ],
    P + "CreatePaymentIntentResponse": [
        ("payment_intent_id", 1, STRING),
        ("status", 2, ENUM, P + "PaymentStatus"),
        ("client_secret", 3, STRING),
        ("payment_url", 4, STRING),
        ("expires_at", 5, MSG, TS),
        ("error", 6, MSG, ERROR),
    ],
    P + "ProcessPaymentRequest": [
        ("payment_intent_id", 1, STRING),
        ("payment_details", 2, MSG, P + "PaymentDetails"),
        ("idempotency_key", 3, STRING),
    ],
    P + "ProcessPaymentResponse": [
        ("payment_id", 1, STRING),
        ("status", 2, ENUM, P + "PaymentStatus"),
        ("processed_at", 3, MSG, TS),
        ("transaction_id", 4, STRING),
        ("result", 5, MSG, P + "PaymentResult"),
        ("error", 6, MSG, ERROR),
    ],
    P + "GetPaymentStatusRequest": [
        ("payment_intent_id", 1, STRING),
        ("user_id", 2, STRING),
    ],
    P + "GetPaymentStatusResponse": [
        ("payment", 1, MSG, P + "Payment"),
        ("error", 2, MSG, ERROR),
    ],
    P + "CancelPaymentRequest": [
        ("payment_intent_id", 1, STRING),
        ("reason", 2, STRING),
        ("refund_amount", 3, MSG, MONEY),
        ("idempotency_key", 4, STRING),
    ],
    P + "CancelPaymentResponse": [
        ("status", 1, ENUM, P + "PaymentStatus"),
        ("cancelled_at", 2, MSG, TS),
        ("refunded_amount", 3, MSG, MONEY),
        ("refund_id", 4, STRING),
        ("error", 5, MSG, ERROR),
    ],
    P + "ListPaymentsRequest": [
        ("user_id", 1, STRING),
        ("status", 2, ENUM, P + "PaymentStatus"),
        ("reservation_id", 3, STRING),
        ("pagination", 4, MSG, "common.v1.Pagination"),
    ],
    P + "ListPaymentsResponse": [
        ("payments", 1, MSG, P + "Payment", "repeated"),
        ("page_info", 2, MSG, "common.v1.PageInfo"),
        ("error", 3, MSG, ERROR),
    ],
    P + "SimulateWebhookRequest": [
        ("payment_intent_id", 1, STRING),
        ("target_status", 2, ENUM, P + "PaymentStatus"),
        ("delay_seconds", 3, INT32),
        ("force_trigger", 4, BOOL),
    ],
    P + "SimulateWebhookResponse": [
        ("webhook_sent", 1, BOOL),
        ("webhook_id", 2, STRING),
        ("scheduled_at", 3, MSG, TS),
        ("error", 4, MSG, ERROR),
    ],
    P + "Payment": [
        ("payment_intent_id", 1, STRING),
        ("payment_id", 2, STRING),
        ("reservation_id", 3, STRING),
        ("user_id", 4, STRING),
        ("status", 5, ENUM, P + "PaymentStatus"),
        ("amount", 6, MSG, MONEY),
        ("method", 7, ENUM, P + "PaymentMethod"),
        ("created_at", 8, MSG, TS),
        ("updated_at", 9, MSG, TS),
        ("processed_at", 10, MSG, TS),
        ("transaction_id", 11, STRING),
        ("result", 12, MSG, P + "PaymentResult"),
        ("metadata", 13, MSG, P + "PaymentMetadata"),
    ],
    P + "PaymentDetails": [
        ("method", 1, ENUM, P + "PaymentMethod"),
        ("credit_card", 2, MSG, P + "CreditCardDetails"),
        ("bank_transfer", 3, MSG, P + "BankTransferDetails"),
        ("mobile_pay", 4, MSG, P + "MobilePayDetails"),
    ],
    P + "CreditCardDetails": [
        ("card_number", 1, STRING),
        ("expiry_month", 2, STRING),
        ("expiry_year", 3, STRING),
        ("cardholder_name", 4, STRING),
        ("cvv", 5, STRING),
    ],
    P + "BankTransferDetails": [
        ("bank_code", 1, STRING),
        ("account_number", 2, STRING),
        ("account_holder", 3, STRING),
    ],
    P + "MobilePayDetails": [
        ("provider", 1, STRING),
        ("mobile_number", 2, STRING),
    ],
    P + "PaymentMetadata": [
        ("source", 1, STRING),
        ("user_agent", 2, STRING),
        ("ip_address", 3, STRING),
        ("session_id", 4, STRING),
        ("scenario", 5, ENUM, P + "PaymentScenario"),
        ("tags", 6, MSG, P + "PaymentMetadata.TagsEntry", "map"),
    ],
    P + "PaymentResult": [
        ("success", 1, BOOL),
        ("failure_reason", 2, STRING),
        ("gateway_response", 3, STRING),
        ("response_code", 4, INT32),
        ("processed_at", 5, MSG, TS),
    ],
    "common.v1.Money": [
        ("amount", 1, INT64),
        ("currency", 2, STRING),
    ],
    "common.v1.Pagination": [
        ("page", 1, INT32),
        ("page_size", 2, INT32),
        ("cursor", 3, STRING),
    ],
    "common.v1.PageInfo": [
        ("total_count", 1, INT32),
        ("has_next_page", 2, BOOL),
        ("has_previous_page", 3, BOOL),
        ("next_cursor", 4, STRING),
        ("previous_cursor", 5, STRING),
    ],
    "common.v1.Error": [
        ("code", 1, ENUM, "common.v1.ErrorCode"),
        ("message", 2, STRING),
        ("trace_id", 3, STRING),
        ("details", 4, MSG, "common.v1.ErrorDetail", "repeated"),
    ],
    "common.v1.ErrorDetail": [
        ("field", 1, STRING),
        ("reason", 2, STRING),
        ("value", 3, STRING),
    ],
}

# paysim's own additions: new fields with numbers above the contract's, which
# an old client ignores (CONTRACT §1 allows exactly this). README lists them.
ADDITIONS: dict[str, list[Field]] = {
    P + "Payment": [
        ("refunded_amount", 14, MSG, MONEY),
        ("cancelled_at", 15, MSG, TS),
        ("cancellation_reason", 16, STRING),
    ],
}


ENUMS: dict[str, tuple[str, list[str]]] = {
    P + "PaymentMethod": (
        "PAYMENT_METHOD_",
        [
            "UNSPECIFIED",
            "CREDIT_CARD",
            "DEBIT_CARD",
            "BANK_TRANSFER",
            "MOBILE_PAY",
            "DIGITAL_WALLET",
        ],
    ),
    P + "PaymentStatus": (
        "PAYMENT_STATUS_",
        [
            "UNSPECIFIED",
            "PENDING",
            "PROCESSING",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "REFUNDED",
            "EXPIRED",
        ],
    ),
    P + "PaymentScenario": (
        "PAYMENT_SCENARIO_",
        ["UNSPECIFIED", "APPROVE", "FAIL", "DELAY", "RANDOM", "TIMEOUT"],
    ),
    "common.v1.ErrorCode": (
        "ERROR_CODE_",
        [
            "UNSPECIFIED",
            "UNAUTHENTICATED",
            "FORBIDDEN",
            "UNAUTHORIZED",
            "INVALID_ARGUMENT",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "FAILED_PRECONDITION",
            "RATE_LIMITED",
            "QUOTA_EXCEEDED",
            "IDEMPOTENCY_REQUIRED",
            "IDEMPOTENCY_CONFLICT",
            "RESERVATION_EXPIRED",
            "PAYMENT_NOT_APPROVED",
            "INVENTORY_CONFLICT",
            "INSUFFICIENT_INVENTORY",
            "INTERNAL",
            "UNAVAILABLE",
            "TIMEOUT",
            "UPSTREAM_TIMEOUT",
            "UPSTREAM_ERROR",
            "DATA_CORRUPTION",
            "CONCURRENT_MODIFICATION",
        ],
    ),
}

# --- helpers -------------------------------------------------------------------------------


def _file_of(full_name: str):
    if full_name.startswith(P):
        return payment_pb2
    return errors_pb2 if full_name.startswith("common.v1.Error") else types_pb2


def _message(full_name: str) -> Descriptor:
    pool = payment_pb2.DESCRIPTOR.pool
    return pool.FindMessageTypeByName(full_name)


def _enum(full_name: str) -> EnumDescriptor:
    return payment_pb2.DESCRIPTOR.pool.FindEnumTypeByName(full_name)


# --- tests ---------------------------------------------------------------------------------


def test_generated_code_is_not_stale():
    assert protogen.check() == [], "run `python -m paysim.protogen` and commit paysim/_proto"


@pytest.mark.parametrize("key", sorted(FILES))
def test_file_descriptor_name_and_package(key):
    module, name, package = FILES[key]
    assert module.DESCRIPTOR.name == name
    assert module.DESCRIPTOR.package == package


def test_payment_proto_dependencies():
    deps = sorted(d.name for d in payment_pb2.DESCRIPTOR.dependencies)
    assert deps == [
        "google/protobuf/timestamp.proto",
        "proto/common/v1/errors.proto",
        "proto/common/v1/types.proto",
    ]


def test_service_and_methods():
    services = payment_pb2.DESCRIPTOR.services_by_name
    assert list(services) == ["PaymentService"]
    service = services["PaymentService"]
    assert service.full_name == SERVICE
    got = {
        m.name: (
            m.input_type.full_name,
            m.output_type.full_name,
            m.client_streaming,
            m.server_streaming,
        )
        for m in service.methods
    }
    want = {name: (P + req, P + resp, False, False) for name, (req, resp) in METHODS.items()}
    assert got == want


def test_every_message_is_in_the_table():
    """No message is missing from the table, so the field checks below cover all of them."""
    found: set[str] = set()
    for module, _, _ in FILES.values():
        found.update(m.full_name for m in module.DESCRIPTOR.message_types_by_name.values())
    assert found == set(MESSAGES)


@pytest.mark.parametrize("full_name", sorted(MESSAGES))
def test_message_fields(full_name):
    message = _message(full_name)
    assert message.file is _file_of(full_name).DESCRIPTOR
    assert not message.oneofs, "contract messages use plain fields, not oneofs"
    got = []
    for f in sorted(message.fields, key=lambda f: f.number):
        spec: list[object] = [f.name, f.number, f.type]
        if f.message_type is not None:
            spec.append(f.message_type.full_name)
        elif f.enum_type is not None:
            spec.append(f.enum_type.full_name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            spec.append("map")
        elif f.is_repeated:
            spec.append("repeated")
        got.append(tuple(spec))
    contract = MESSAGES[full_name]
    assert got == contract + ADDITIONS.get(full_name, [])
    if full_name in ADDITIONS:
        numbers = [int(str(f[1])) for f in contract]
        assert min(int(str(f[1])) for f in ADDITIONS[full_name]) > max(numbers)


def test_payment_metadata_tags_is_map_string_string():
    entry = _message(P + "PaymentMetadata").fields_by_name["tags"].message_type
    assert entry is not None
    assert entry.GetOptions().map_entry
    assert [(f.name, f.number, f.type) for f in entry.fields] == [
        ("key", 1, STRING),
        ("value", 2, STRING),
    ]
    meta = payment_pb2.PaymentMetadata(tags={"a": "b"})
    assert dict(meta.tags) == {"a": "b"}


def test_every_enum_is_in_the_table():
    found: set[str] = set()
    for module, _, _ in FILES.values():
        found.update(e.full_name for e in module.DESCRIPTOR.enum_types_by_name.values())
    assert found == set(ENUMS)


@pytest.mark.parametrize("full_name", sorted(ENUMS))
def test_enum_values(full_name):
    prefix, names = ENUMS[full_name]
    enum = _enum(full_name)
    assert enum.file is _file_of(full_name).DESCRIPTOR
    got = [(v.name, v.number) for v in enum.values]
    assert got == [(prefix + name, number) for number, name in enumerate(names)]


def test_payment_status_numbers():
    # An older README had COMPLETED=2, FAILED=3; the contract says 3 and 4.
    assert payment_pb2.PAYMENT_STATUS_COMPLETED == 3
    assert payment_pb2.PAYMENT_STATUS_FAILED == 4
    assert payment_pb2.PaymentStatus.Name(3) == "PAYMENT_STATUS_COMPLETED"


def test_messages_live_in_the_package():
    assert payment_pb2.Payment.__module__ == "paysim._proto.proto.payment.v1.payment_pb2"
    assert types_pb2.Money.__module__ == "paysim._proto.proto.common.v1.types_pb2"


def test_purerpc_stub():
    from paysim._proto.proto.payment.v1 import payment_grpc

    service = payment_grpc.PaymentServiceServicer().service
    assert service.name == SERVICE
    assert sorted(service.methods) == sorted(METHODS)
    for name, (req, resp) in METHODS.items():
        signature = service.methods[name].signature
        assert signature.cardinality is purerpc.Cardinality.UNARY_UNARY
        assert signature.request_type is getattr(payment_pb2, req)
        assert signature.response_type is getattr(payment_pb2, resp)
    assert hasattr(payment_grpc, "PaymentServiceStub")


def test_grpcio_stub():
    from paysim._proto.proto.payment.v1 import payment_pb2_grpc

    assert hasattr(payment_pb2_grpc, "PaymentServiceStub")
    assert hasattr(payment_pb2_grpc, "PaymentServiceServicer")
    assert hasattr(payment_pb2_grpc, "add_PaymentServiceServicer_to_server")
