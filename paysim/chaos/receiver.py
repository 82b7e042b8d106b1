"""The built-in webhook receiver: verifies every delivery, records it, and misbehaves on purpose.

Each request is read whole (h11 on a trio stream), its signature checked with
``paysim.webhooks.verify`` (the consumer's own check), its body parsed, and
then one of these answers, chosen by ``FaultPlan``:

* ``ok``: 200, the delivery is acknowledged;
* ``5xx``: 500, 502 or 503 (no Retry-After): the server must retry;
* ``timeout``: no answer for longer than the server's WEBHOOK_TIMEOUT, then the
  connection is closed: the server must give up on the attempt and retry;
* ``reset``: the connection is reset (RST) right after the request was read;
* ``rejected``: 400 for a bad signature or a body that is not the contract's
  (never chosen: it is what a strict consumer does, and it fails a check).

"Down" windows are the ``Gate``'s: connections refused, open ones reset.

The choice is a pure function of (seed, reservation id, status, amount
refunded, X-Webhook-Attempt): the same run gets the same faults whatever the
order in which concurrent deliveries arrive. Only ``ok`` receipts count as
delivered; every receipt is recorded (``receipts``) for the invariants.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import h11
import trio
from trio_util import AsyncValue

from paysim.chaos.gate import Gate, reset
from paysim.webhooks import WebhookVerificationError, verify

_CHUNK = 65536
_MAX_BODY = 1 << 20
_ANSWER_TIMEOUT_S = 10.0
REPLAY_TOLERANCE_S = 86_400.0


def unit(*parts: object) -> float:
    """A number in [0, 1) that depends only on ``parts``: a reproducible coin."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(slots=True)
class Receipt:
    """One webhook request as the receiver saw it."""

    t: float  # wall clock, when the whole request had arrived
    payment_id: str
    reservation_id: str
    status: str
    refunded: int  # the body's refunded_amount (0 when absent): tells refund changes apart
    webhook_id: str
    attempt: int
    digest: str  # of the body: one X-Webhook-Id must always carry the same bytes
    signature_ok: bool
    answer: str  # ok, 5xx, timeout, reset, rejected

    @property
    def change(self) -> tuple[str, str, int]:
        return (self.payment_id, self.status, self.refunded)


@dataclass(frozen=True)
class FaultPlan:
    p_5xx: float = 0.0
    p_timeout: float = 0.0
    p_reset: float = 0.0
    seed: int = 0

    def decide(self, reservation_id: str, status: str, refunded: int, attempt: int) -> str:
        u = unit(self.seed, "receiver", reservation_id, status, refunded, attempt)
        for answer, p in (
            ("5xx", self.p_5xx),
            ("timeout", self.p_timeout),
            ("reset", self.p_reset),
        ):
            if u < p:
                return answer
            u -= p
        return "ok"

    def status_5xx(self, reservation_id: str, attempt: int) -> int:
        return (500, 502, 503)[int(unit(self.seed, "5xx", reservation_id, attempt) * 3)]


class WebhookReceiver:
    def __init__(
        self,
        secrets: tuple[str, ...],
        plan: FaultPlan,
        *,
        slow_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``slow_s``: how long a ``timeout`` answer keeps the server waiting (> its timeout)."""
        self._secrets = secrets
        self._plan = plan
        self._slow_s = slow_s
        self._clock = clock
        self.gate = Gate(self._connection)
        self.receipts: list[Receipt] = []
        self.answers: Counter[str] = Counter()
        self._received = AsyncValue(0)  # how many requests were recorded (trio-util)

    async def serve(
        self,
        host: str,
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        await self.gate.serve(host, port, task_status=task_status)

    def delivered(self) -> int:
        return self.answers["ok"]

    async def wait_for_payments(self, count: int, answer: str | None = "ok") -> None:
        """Block until webhooks answered ``answer`` (None: any) name ``count`` payments."""

        def enough(_: int) -> bool:
            paid = {r.payment_id for r in self.receipts if answer in (None, r.answer)}
            return len(paid) >= count

        await self._received.wait_value(enough)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            request = await _read_request(stream, conn)
            if request is None:
                return
            answer, status = self._receive(*request)
            if answer == "reset":
                reset(stream)
                return
            if answer == "timeout":
                await trio.sleep(self._slow_s)
                return  # closed without an answer, long after the server stopped waiting
            with trio.fail_after(_ANSWER_TIMEOUT_S):
                await _respond(stream, conn, status)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    def _receive(self, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[str, int]:
        """Record one request; the answer kind and the HTTP status to send."""
        now = self._clock()
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        try:
            # The promise checked is the signature; a retry may legitimately
            # arrive long after the change (the legacy timestamp is the change's).
            verify(body, pairs, self._secrets, tolerance_s=REPLAY_TOLERANCE_S)
            signature_ok = True
        except WebhookVerificationError:
            signature_ok = False
        named = dict(pairs)
        try:
            doc = json.loads(body)
            payment_id, reservation_id = str(doc["payment_id"]), str(doc["reservation_id"])
            status, refunded = str(doc["status"]), int(doc.get("refunded_amount", 0))
            attempt = int(named.get("x-webhook-attempt", "0"))
        except (ValueError, KeyError, TypeError):
            self.answers["rejected"] += 1
            return "rejected", 400
        answer = "ok" if signature_ok else "rejected"
        if signature_ok:
            answer = self._plan.decide(reservation_id, status, refunded, attempt)
        self.answers[answer] += 1
        self.receipts.append(
            Receipt(
                t=now,
                payment_id=payment_id,
                reservation_id=reservation_id,
                status=status,
                refunded=refunded,
                webhook_id=named.get("x-webhook-id", ""),
                attempt=attempt,
                digest=hashlib.blake2b(body, digest_size=8).hexdigest(),
                signature_ok=signature_ok,
                answer=answer,
            )
        )
        self._received.value += 1  # after the append: waiters test the receipts at once
        if answer == "5xx":
            return answer, self._plan.status_5xx(reservation_id, attempt)
        return answer, 200 if answer == "ok" else 400


async def _read_request(
    stream: trio.SocketStream, conn: h11.Connection
) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
    """The next request's headers and body; None when the client closed the connection."""
    headers: list[tuple[bytes, bytes]] = []
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(_CHUNK))
        elif isinstance(event, h11.Request):
            headers = list(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_BODY:
                return None
        elif isinstance(event, h11.EndOfMessage):
            return headers, bytes(body)
        else:  # ConnectionClosed (or PAUSED, which cannot happen: we never read ahead)
            return None


async def _respond(stream: trio.SocketStream, conn: h11.Connection, status: int) -> None:
    body = b"{}"
    head = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    data = conn.send(h11.Response(status_code=status, headers=head))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(data)
