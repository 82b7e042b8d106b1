"""Logs: one JSON line per RPC with its method, code, latency and payment id; no secrets.

The ``json_log`` fixture configures paysim's logging exactly as the CLI does,
into a StringIO, with one test-only change: loggers are not cached on first use.
structlog's module-level loggers (``paysim.grpc``'s among them) would otherwise
stay bound to this test's stream for the rest of the session, and
``structlog.testing.capture_logs`` in other modules would stop seeing them.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
import trio

from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim.observability.logging import configure
from tests.grpc_helpers import StartApp, call, call_error, create_request, payment_stub

CARD = "4111111111111111"


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    configure(level="info", json=True, stream=stream)
    structlog.configure(cache_logger_on_first_use=False)
    yield stream
    structlog.reset_defaults()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line, parsed: each one must be a JSON object."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def rpc_records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [r for r in records(stream) if r["event"] == "rpc"]


async def test_one_json_line_per_rpc(json_log, start_app: StartApp):
    app = await start_app()
    with payment_stub(app.grpc_port) as stub:
        resp = await call(stub.CreatePaymentIntent, create_request())
        # The line is written before the trailers go out, so it is there now.
        [line] = rpc_records(json_log)
    assert line["grpc_method"] == "payment.v1.PaymentService/CreatePaymentIntent"
    assert line["grpc_code"] == "OK"
    assert isinstance(line["ms"], int | float)
    assert 0 <= line["ms"] < 10_000
    assert line["payment_id"] == resp.payment_intent_id
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    assert resp.client_secret not in json_log.getvalue()  # the secret is never logged
    assert any(r["event"] == "paysim serving" for r in records(json_log))


async def test_failed_rpc_line_has_its_code_and_the_payment_asked_for(json_log, start_app):
    app = await start_app()
    with payment_stub(app.grpc_port) as stub:
        request = pb.GetPaymentStatusRequest(payment_intent_id="pay_missing")
        await call_error(stub.GetPaymentStatus, request)
        [line] = rpc_records(json_log)
    assert line["grpc_method"] == "payment.v1.PaymentService/GetPaymentStatus"
    assert line["grpc_code"] == "NOT_FOUND"
    assert line["payment_id"] == "pay_missing"
    assert line["grpc_message"] == "payment not found: pay_missing"  # what the client got


async def test_an_ok_rpc_line_has_no_message(json_log, start_app):
    app = await start_app()
    with payment_stub(app.grpc_port) as stub:
        await call(stub.CreatePaymentIntent, create_request())
        [line] = rpc_records(json_log)
    assert "grpc_message" not in line


async def test_reflection_chatter_is_at_debug(json_log, start_app):
    """grpcurl asks reflection before every call: those lines stay out of info."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    from tests.grpc_helpers import open_channel

    app = await start_app()
    channel = open_channel(app.grpc_port)
    try:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = await trio.to_thread.run_sync(db.get_services)
        assert "payment.v1.PaymentService" in services
        with payment_stub(app.grpc_port) as stub:
            await call(stub.CreatePaymentIntent, create_request())
    finally:
        channel.close()
    methods = [r["grpc_method"] for r in rpc_records(json_log)]
    assert methods == ["payment.v1.PaymentService/CreatePaymentIntent"]


@pytest.mark.parametrize(
    ("code", "quiet"),
    [("OK", True), ("CANCELLED", True), ("NOT_FOUND", False), ("INTERNAL", False)],
)
def test_a_reflection_stream_its_client_closed_is_chatter_too(json_log, code, quiet):
    # grpcurl closes its reflection stream after every call: CANCELLED, like OK,
    # stays at debug; a real failure of reflection is still at info.
    from purerpc.grpclib.status import Status, StatusCode

    from paysim.entrypoints.grpc.calls import _log_rpc
    from paysim.entrypoints.grpc.reflection import V1ALPHA
    from paysim.observability.logging import Trusted

    _log_rpc(
        Trusted(f"{V1ALPHA}/ServerReflectionInfo"), Status(StatusCode[code], "x"), 0.001, V1ALPHA
    )
    assert [r["grpc_code"] for r in rpc_records(json_log)] == ([] if quiet else [code])


def test_every_line_names_its_process_when_asked(json_log):
    configure(level="info", json=True, stream=json_log, process="worker")
    structlog.configure(cache_logger_on_first_use=False)
    structlog.get_logger("test").info("polling")
    structlog.get_logger("test").bind(process="dev").info("mine")
    logging.getLogger("botocore.test").warning("library line")
    lines = records(json_log)
    assert [(r["event"], r["process"]) for r in lines] == [
        ("polling", "worker"),
        ("mine", "dev"),
        ("library line", "worker"),
    ]


async def test_card_details_never_reach_the_log(json_log, start_app):
    app = await start_app()
    with payment_stub(app.grpc_port) as stub:
        created = await call(stub.CreatePaymentIntent, create_request())
        details = pb.PaymentDetails(
            method=pb.PAYMENT_METHOD_CREDIT_CARD,
            credit_card=pb.CreditCardDetails(card_number=CARD, cvv="123", expiry_month="12"),
        )
        request = pb.ProcessPaymentRequest(
            payment_intent_id=created.payment_intent_id, payment_details=details
        )
        await call(stub.ProcessPayment, request)
        bad = pb.PaymentDetails(credit_card=pb.CreditCardDetails(card_number=CARD + "0000"))
        await call_error(
            stub.ProcessPayment,
            pb.ProcessPaymentRequest(
                payment_intent_id=created.payment_intent_id, payment_details=bad
            ),
        )
        codes = [r["grpc_code"] for r in rpc_records(json_log)]
    assert codes == ["OK", "OK", "INVALID_ARGUMENT"]
    assert CARD not in json_log.getvalue()


@pytest.mark.parametrize(
    "key", ["card_number", "cvv", "client_secret", "webhook_secret", "password", "authorization"]
)
def test_secret_keys_are_redacted(json_log, key):
    secret = "s3cr3t-value-4111"
    structlog.get_logger("test").info("paying", amount=1000, **{key: secret})
    [line] = records(json_log)
    assert line[key] == "[redacted]"
    assert line["amount"] == 1000  # everything else is kept
    assert line["event"] == "paying"
    assert secret not in json_log.getvalue()


def test_levels_below_the_configured_one_are_dropped(json_log):
    log = structlog.get_logger("test")
    log.debug("noise")
    log.warning("kept")
    assert [r["event"] for r in records(json_log)] == ["kept"]
