"""The in-process webhook receiver: a small HTTP/1.1 server on loopback (trio + h11).

Theory of operation. ``WebhookReceiver.serve`` listens on ``127.0.0.1`` on an
ephemeral port in the simulator's nursery. Every request it reads is one
delivery: the body is checked against the simulator's secrets in *both*
signature styles (``paysim.delivery.signing.verify``: the legacy
``X-Webhook-Signature`` always, the Standard Webhooks headers when present),
recorded as a ``Delivery`` and answered. The path says which inbox it is for
(``/hooks/<scope>``), so two tests sharing one simulator never see each
other's deliveries; ``Inbox`` is one scope's view (``paysim.testing.inbox``).

Policy decisions:

* An inbox answers 200 unless a test asked it to misbehave: ``fail`` answers
  an error status, ``slow`` waits before answering (on trio's clock, so a
  delay longer than WEBHOOK_TIMEOUT_MS makes the sender time out in virtual
  time), ``go_away`` closes the connection without answering (the sender
  sees a broken connection, as from a host that is down).
* A delivery whose signature does not verify is answered 401 and recorded
  with the reason; waiting on it raises (``Inbox.next``).
* Requests are read whole, bounded by ``MAX_BODY_BYTES``; anything malformed
  closes the connection. The peer is paysim itself, on loopback.

Resource handling: ``serve`` owns its listener and every connection, and
closes them when cancelled.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, NoReturn

import h11
import trio

from paysim.delivery.signing import WebhookVerificationError, verify
from paysim.testing.feed import Feed

MAX_BODY_BYTES = 1 << 20
HOOKS_PATH = "/hooks/"
_STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


@dataclass(frozen=True)
class Delivery:
    """One webhook request as received, and how the receiver answered it.

    ``payload`` is the parsed JSON body (``payment_id``, ``reservation_id``,
    ``status``, ``amount``, ``currency``, ``timestamp``, ``event_type``);
    ``styles`` the signature styles that verified (``"legacy"``,
    ``"standard"``); ``error`` why verification failed (None if it passed);
    ``answered`` the status sent back, 0 when the connection was dropped;
    ``received_at`` trio's clock at arrival. A delivery is recorded when it
    is answered (after ``slow``'s wait).
    """

    scope: str
    payload: dict[str, Any]
    body: bytes
    headers: dict[str, str]
    styles: tuple[str, ...]
    error: str | None
    answered: int
    received_at: float

    @property
    def payment_id(self) -> str:
        return str(self.payload.get("payment_id", ""))

    @property
    def status(self) -> str:
        return str(self.payload.get("status", ""))

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("x-webhook-id")

    @property
    def accepted(self) -> bool:
        return 200 <= self.answered < 300


@dataclass
class Behaviour:
    """How one inbox answers now; the test changes it through ``Inbox``."""

    fail_status: int = 0  # 0: do not fail
    fail_left: int | None = None  # failures left; None: until recovered
    slow_s: float = 0.0
    gone: bool = False
    until: float | None = None  # trio time when the misbehaviour ends by itself

    def expired(self) -> bool:
        return self.until is not None and trio.current_time() >= self.until


@dataclass
class _Request:
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class WebhookReceiver:
    """The server behind every inbox of one simulator; see the module docstring."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._secrets = secrets
        self.feed: Feed[Delivery] = Feed()
        self.behaviours: dict[str, Behaviour] = {}
        self.port = 0

    def url(self, scope: str) -> str:
        return f"http://127.0.0.1:{self.port}{HOOKS_PATH}{scope}"

    def behaviour(self, scope: str) -> Behaviour:
        current = self.behaviours.get(scope)
        if current is None or current.expired():
            current = self.behaviours[scope] = Behaviour()
        return current

    async def serve(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Accept deliveries until cancelled; ``task_status.started(port)`` once listening."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            task_status.started(self.port)
        raise AssertionError("unreachable: serve_listeners never returns")

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY_BYTES)
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, h11.ProtocolError):
                while True:
                    request = await _read_request(conn, stream)
                    if request is None:
                        return
                    status = await self._answer(request)
                    if status == 0:
                        return  # gone: close without an answer
                    await _send(conn, stream, status)
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()

    async def _answer(self, request: _Request) -> int:
        scope = request.path.removeprefix(HOOKS_PATH) if request.path.startswith(HOOKS_PATH) else ""
        body = bytes(request.body)
        styles, error = self._verify(body, request.headers)
        behaviour = self.behaviour(scope)
        arrived = trio.current_time()
        if behaviour.slow_s > 0:  # the sender may give up meanwhile: recorded when answered
            await trio.sleep(behaviour.slow_s)
        answered = 200 if error is None else 401
        if behaviour.gone:
            answered = 0
        elif behaviour.fail_status and behaviour.fail_left != 0:
            answered = behaviour.fail_status
            if behaviour.fail_left is not None:
                behaviour.fail_left -= 1
        self.feed.append(
            Delivery(
                scope,
                _payload(body),
                body,
                request.headers,
                styles,
                error,
                answered,
                arrived,
            )
        )
        return answered

    def _verify(self, body: bytes, headers: dict[str, str]) -> tuple[tuple[str, ...], str | None]:
        """Every style present must verify; the legacy one always is."""
        styles: list[str] = []
        legacy = {k: v for k, v in headers.items() if k not in _STANDARD_HEADERS}
        try:
            styles.append(verify(body, legacy, self._secrets).style)
            if "webhook-signature" in headers:
                styles.append(verify(body, headers, self._secrets).style)
        except WebhookVerificationError as exc:
            return tuple(styles), str(exc)
        return tuple(styles), None


def _payload(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> _Request | None:
    """One whole request, or None at the end of the connection."""
    request: _Request | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and request is None and conn.their_state is h11.IDLE:
                return None
        elif isinstance(event, h11.Request):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            request = _Request(event.target.decode("latin-1").split("?")[0], headers)
        elif isinstance(event, h11.Data) and request is not None:
            request.body += event.data
            if len(request.body) > MAX_BODY_BYTES:
                return None
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _send(conn: h11.Connection, stream: trio.SocketStream, status: int) -> None:
    head = h11.Response(status_code=status, headers=[("Content-Length", "0")])
    await stream.send_all(conn.send(head) + conn.send(h11.EndOfMessage()))
