"""Card data never reaches a log line, a metric or a response, on any error path.

Every test sends ProcessPayment with card 4111111111111111 and CVV 987 to a
real server on loopback, logging at debug (JSON and console), the standard
library's records in the same stream, and then searches everything it can see
(log text, /metrics text, grpc-message and details) for the card and the CVV,
in clear, as hex, as base64 and as they look inside a bytes repr.

``Capture`` is the log stream: tests wait on it for the line that ends their
case (it wakes a waiting task on each write), never on the clock.
"""

from __future__ import annotations

import base64
import io
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import structlog
import trio

from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim.observability.logging import configure, format_exception
from tests.grpc_helpers import AppHandle, StartApp, call, call_error, create_request, payment_stub
from tests.h2_client import RawClient, frame

CARD = "4111111111111111"
CVV = "987"
PROCESS_PATH = "/payment.v1.PaymentService/ProcessPayment"
WAIT_S = 10.0

# What must never be seen, anywhere. The card's first eight digits catch a
# truncated repr as well; "****1111" (the last four) is allowed.
FORBIDDEN = [
    re.compile(CARD[:8]),
    re.compile(CARD.encode().hex()[:16], re.IGNORECASE),
    re.compile(re.escape(base64.b64encode(CARD.encode()).decode()[:12])),
    re.compile(r"(?<![\w.:-])" + CVV + r"(?!\w)"),  # '987', "987", cvv=987
    re.compile(r"x03" + CVV),  # inside a bytes repr: b'...*\x03987'
    re.compile(r"03" + CVV.encode().hex(), re.IGNORECASE),  # hex dump of the field
]


def assert_clean(text: str, where: str) -> None:
    for pattern in FORBIDDEN:
        found = pattern.search(text)
        assert found is None, (
            f"{where} carries card data ({pattern.pattern!r}): "
            f"...{text[max(0, found.start() - 200) : found.end() + 200]}..."
        )


class Capture(io.StringIO):
    """A log stream that wakes ``wait_for`` on every write (same thread: trio's)."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    def write(self, s: str) -> int:
        n = super().write(s)
        self._changed.set()
        return n

    async def wait_for(self, *needles: str) -> None:
        """Until one of ``needles`` has been written."""
        with trio.fail_after(WAIT_S):
            while not any(needle in self.getvalue() for needle in needles):
                self._changed = trio.Event()
                await self._changed.wait()


@pytest.fixture(params=["json", "console"])
def log(request: pytest.FixtureRequest) -> Iterator[Capture]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    out = Capture()
    configure(level="debug", json=request.param == "json", stream=out)
    structlog.configure(cache_logger_on_first_use=False)  # no logger keeps this stream
    yield out
    structlog.reset_defaults()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def card(**fields: str) -> pb.PaymentDetails:
    values = {"card_number": CARD, "cvv": CVV, "expiry_month": "12", "expiry_year": "2030"}
    values.update(fields)
    return pb.PaymentDetails(
        method=pb.PAYMENT_METHOD_CREDIT_CARD, credit_card=pb.CreditCardDetails(**values)
    )


def process_request(payment_id: str, **fields: str) -> pb.ProcessPaymentRequest:
    return pb.ProcessPaymentRequest(payment_intent_id=payment_id, payment_details=card(**fields))


RPC_DONE = "PaymentService/ProcessPayment"  # in the "rpc" line, in both formats


async def check_everything(app: AppHandle, log: Capture, responses: list[str]) -> None:
    await app.stop()  # every line is written by now
    text = log.getvalue()
    assert RPC_DONE in text or "grpc connection failed" in text  # the case did run
    assert_clean(text, "the log")
    metrics, _ = app.running.metrics.render()
    assert_clean(metrics.decode(), "/metrics")
    for response in responses:
        assert_clean(response, "a response")


# -- through a stock client ------------------------------------------------------


async def test_invalid_fields(log: Capture, start_app: StartApp) -> None:
    app = await start_app()
    details = []
    with payment_stub(app.grpc_port) as stub:
        created = await call(stub.CreatePaymentIntent, create_request())
        pid = created.payment_intent_id
        for bad in ({"expiry_month": "13"}, {"card_number": CARD + "0000"}, {"cvv": CVV + "00"}):
            err = await call_error(stub.ProcessPayment, process_request(pid, **bad))
            details.append(err.details())
    await check_everything(app, log, details)


async def test_unknown_payment(log: Capture, start_app: StartApp) -> None:
    app = await start_app()
    with payment_stub(app.grpc_port) as stub:
        err = await call_error(stub.ProcessPayment, process_request("pay_missing"))
    await check_everything(app, log, [err.details()])


async def test_wrong_status(log: Capture, start_app: StartApp) -> None:
    app = await start_app()
    details = []
    with payment_stub(app.grpc_port) as stub:
        created = await call(
            stub.CreatePaymentIntent, create_request(method=pb.PAYMENT_METHOD_CREDIT_CARD)
        )
        pid = created.payment_intent_id
        other = card()
        other.method = pb.PAYMENT_METHOD_BANK_TRANSFER  # not the intent's method
        err = await call_error(
            stub.ProcessPayment,
            pb.ProcessPaymentRequest(payment_intent_id=pid, payment_details=other),
        )
        details.append(err.details())
        await call(stub.ProcessPayment, process_request(pid))
        await call(stub.ProcessPayment, process_request(pid))  # already COMPLETED
        created = await call(stub.CreatePaymentIntent, create_request(reservation_id="rsv_2"))
        cancelled = created.payment_intent_id
        await call(stub.CancelPayment, pb.CancelPaymentRequest(payment_intent_id=cancelled))
        await call(stub.ProcessPayment, process_request(cancelled))  # already CANCELLED
    await check_everything(app, log, details)


async def test_handler_that_raises(
    log: Capture, start_app: StartApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store-like failure whose message carries the bytes it was given and the card."""

    async def failing(self: Any, payment_intent_id: str, *args: Any) -> Any:
        request = process_request(payment_intent_id).SerializeToString()
        raise RuntimeError(f"store rejected {request!r} for {CARD}")

    monkeypatch.setattr("paysim.service.PaymentService.process_payment", failing)
    app = await start_app()
    with payment_stub(app.grpc_port) as stub:
        created = await call(stub.CreatePaymentIntent, create_request())
        err = await call_error(stub.ProcessPayment, process_request(created.payment_intent_id))
    assert err.code().name == "INTERNAL"
    await log.wait_for("rpc handler failed")
    assert "[card]" in log.getvalue()  # what was said instead
    assert "[bytes]" in log.getvalue()
    await check_everything(app, log, [err.details()])


# -- through a raw HTTP/2 client: the transport fails mid-stream -----------------------

Case = Callable[[RawClient, bytes], Awaitable[int]]


@pytest.fixture
async def raw(nursery: trio.Nursery, start_app: StartApp) -> tuple[AppHandle, Any]:
    app = await start_app()

    async def connect() -> RawClient:
        return await RawClient.connect(nursery, app.grpc_port)

    return app, connect


def _body() -> tuple[bytes, int]:
    """The framed request, and where the card number starts in it."""
    message = frame(process_request("pay_x").SerializeToString())
    return message, message.index(CARD.encode())


async def _send_headers(client: RawClient) -> int:
    sid = await client.start(PROCESS_PATH, None, end_stream=False)
    return sid


async def bad_trailers(client: RawClient) -> None:
    """The card begins a TCP segment that ends with trailers purerpc cannot parse."""
    body, at = _body()
    sid = await _send_headers(client)
    client.conn.send_data(sid, body[:at])
    await client.flush()
    client.conn.config.validate_outbound_headers = False
    client.conn.send_data(sid, body[at:])
    client.conn.send_headers(sid, [("x-no-status", CVV)], end_stream=True)
    await client.flush()


async def reset_mid_message(client: RawClient) -> None:
    body, at = _body()
    sid = await _send_headers(client)
    client.conn.send_data(sid, body[: at + 8])
    await client.flush()
    await client.reset(sid)
    client.responses[sid].ended.set()  # we ended it: no answer will come


async def truncated_message(client: RawClient) -> None:
    body, _ = _body()
    sid = await _send_headers(client)
    client.conn.send_data(sid, frame(body[5:], length=len(body) + 100), end_stream=True)
    await client.flush()


async def dropped_connection(client: RawClient) -> None:
    body, at = _body()
    sid = await _send_headers(client)
    client.conn.send_data(sid, body[: at + 8])
    await client.flush()
    await client.aclose()


async def not_a_message(client: RawClient) -> None:
    body, _ = _body()
    await client.start(PROCESS_PATH, frame(b"\xff\xff" + body[5:]))


@pytest.mark.parametrize(
    "case",
    [bad_trailers, reset_mid_message, truncated_message, dropped_connection, not_a_message],
)
async def test_transport_fails_mid_stream(
    log: Capture, raw: tuple[AppHandle, Any], case: Any
) -> None:
    app, connect = raw
    client = await connect()
    await case(client)
    # The call's line, or (purerpc's own trailer parsing raised) the connection's.
    await log.wait_for(RPC_DONE, "grpc connection failed")
    if not client.closed.is_set():
        with trio.move_on_after(WAIT_S):  # the answer, when there is one
            for response in client.responses.values():
                await response.ended.wait()
    responses = [
        f"{r.headers} {r.trailers} {r.message} {bytes(r.data)!r}" for r in client.responses.values()
    ]
    await check_everything(app, log, responses)


# -- each renderer, directly ----------------------------------------------------------


def _fail_with_card_in_locals() -> None:
    request = process_request("pay_x")  # a local holding the card
    raw_bytes = request.SerializeToString()  # and its bytes
    known: dict[bytes, str] = {}
    try:
        known[raw_bytes]
    except KeyError as exc:
        raise ValueError(f"could not parse {raw_bytes!r} ({CARD[:4]} {CARD[4:8]}...)") from exc


@pytest.mark.parametrize("library", [False, True], ids=["structlog", "stdlib"])
def test_every_renderer_is_safe(log: Capture, library: bool) -> None:
    try:
        _fail_with_card_in_locals()
    except ValueError:
        if library:  # as purerpc, httpx or boto3 log: %r of bytes, and a traceback
            data = process_request("pay_x").SerializeToString()
            logging.getLogger("purerpc.test").exception("bad frame %r %s", data, CARD)
        else:
            structlog.get_logger("test").exception(
                "failed", data=process_request("pay_x").SerializeToString(), note=f"card {CARD}"
            )
    text = log.getvalue()
    assert "ValueError" in text  # the traceback is there
    assert "_fail_with_card_in_locals" in text
    assert "KeyError" in text  # and its cause
    assert_clean(text, "the log")


def test_format_exception_has_no_locals_and_no_source() -> None:
    try:
        _fail_with_card_in_locals()
    except ValueError as exc:
        text = format_exception(exc)
    assert "raise ValueError" not in text  # no source lines: they can show literals
    assert "The above exception was the direct cause" in text
    assert_clean(text, "format_exception")


def test_library_debug_records_are_dropped(log: Capture) -> None:
    """At LOG_LEVEL=debug, hpack would log every decoded request header."""
    logging.getLogger("hpack.hpack").debug("Decoded %s", ("authorization", "Bearer x"))
    logging.getLogger("hpack.hpack").warning("kept")
    text = log.getvalue()
    assert "Bearer" not in text
    assert "kept" in text
