"""The stand-ins, in their own process: a webhook receiver and a PutEvents endpoint.

``python -m paysim.benchmarks.delivery --receiver PORT OUTFILE`` runs a lean
asyncio HTTP/1.1 server that answers 200 at once, records each webhook's
arrival wall time, payment id, status and attempt, and checks every signature
with ``paysim.webhooks.verify``. With ``--events sink`` the same server stands
in for EventBridge: it accepts every PutEvents entry (checking source,
detail-type and bus) and records its arrival. On SIGTERM it writes its
records to OUTFILE (``read_records`` reads them back); ``receiver_stats``
asks it for its counts while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from paysim.benchmarks.delivery.constants import (
    BUS_NAME,
    EVENT_SOURCE,
    RECEIVER_MAX_LIFETIME_S,
    RECEIVER_PATH,
    SECRET,
)
from paysim.domain.events import DETAIL_TYPE
from paysim.webhooks import WebhookVerificationError, verify


@dataclass
class Record:
    kind: str  # "webhook" or "event" (a PutEvents entry, --events sink)
    arrival: float
    payment_id: str
    status: str
    attempt: str
    signature_ok: bool


@dataclass
class _ReceiverState:
    secret: str
    records: list[Record] = field(default_factory=list)
    webhook_ids: set[str] = field(default_factory=set)
    event_ids: set[str] = field(default_factory=set)
    signature_failures: int = 0
    bad_requests: int = 0

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, bytes]:
        """Record one request; the HTTP status and body to answer."""
        if method == "POST" and target == RECEIVER_PATH:
            return self._webhook(headers, body), b""
        if method == "POST" and ("x-amz-target", "AWSEvents.PutEvents") in headers:
            return self._put_events(body)
        if method == "GET" and target == "/stats":
            return 200, self.stats()
        self.bad_requests += 1
        return 404, b""

    def _webhook(self, headers: list[tuple[str, str]], body: bytes) -> int:
        arrival = time.time()
        try:
            verify(body, headers, self.secret)
            ok = True
        except WebhookVerificationError:
            ok = False
            self.signature_failures += 1
        try:
            doc = json.loads(body)
            payment_id, status = str(doc["payment_id"]), str(doc["status"])
        except (ValueError, KeyError, TypeError):
            self.bad_requests += 1
            return 400
        attempt = next((v for k, v in headers if k == "x-webhook-attempt"), "")
        self.records.append(Record("webhook", arrival, payment_id, status, attempt, ok))
        self.webhook_ids.add(payment_id)
        return 200  # also for a bad signature: counted, not retried

    def _put_events(self, body: bytes) -> tuple[int, bytes]:
        """A stand-in for EventBridge's PutEvents (--events sink): accept every entry."""
        arrival = time.time()
        try:
            entries = json.loads(body)["Entries"]
            found = []
            for entry in entries:
                ours = (entry["Source"], entry["DetailType"], entry.get("EventBusName"))
                detail = json.loads(entry["Detail"])
                found.append((ours == (EVENT_SOURCE, DETAIL_TYPE, BUS_NAME), detail))
        except (ValueError, KeyError, TypeError):
            self.bad_requests += 1
            problem = {"__type": "ValidationException", "message": "bad PutEvents body"}
            return 400, json.dumps(problem).encode()
        answers = []
        for ok, detail in found:
            payment_id = str(detail.get("payment_id", ""))
            status = str(detail.get("status", ""))
            self.records.append(Record("event", arrival, payment_id, status, "", ok))
            self.event_ids.add(payment_id)
            answers.append({"EventId": f"bench-{len(self.records)}"})
        return 200, json.dumps({"FailedEntryCount": 0, "Entries": answers}).encode()

    def stats(self) -> bytes:
        return json.dumps(
            {
                "records": len(self.records),
                "webhooks_unique": len(self.webhook_ids),
                "events_unique": len(self.event_ids),
                "signature_failures": self.signature_failures,
                "bad_requests": self.bad_requests,
            }
        ).encode()

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as out:
            for r in self.records:
                sig = int(r.signature_ok)
                out.write(
                    f"{r.kind}\t{r.arrival:.6f}\t{r.payment_id}\t{r.status}\t{r.attempt}\t{sig}\n"
                )
        tmp.replace(path)


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 431: "Too Large", 501: "Not Impl"}
_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024


class _ReceiverProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1 for httpx and urllib: Content-Length bodies, keep-alive."""

    def __init__(self, state: _ReceiverState) -> None:
        self._state = state
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        for _ in range(10_000):  # bounded: requests pipelined in one read
            if not self._one_request():
                return

    def _one_request(self) -> bool:
        """Answer the first complete request in the buffer; False when there is none."""
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_HEAD:
                self._answer(431, b"", close=True)
            return False
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._answer(400, b"", close=True)
            return False
        headers: list[tuple[str, str]] = []
        length = 0
        close = parts[2] == "HTTP/1.0"
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self._answer(400, b"", close=True)
                return False
            name, value = name.strip().lower(), value.strip()
            headers.append((name, value))
            if name == "content-length":
                if not value.isdigit() or int(value) > _MAX_BODY:
                    self._answer(400, b"", close=True)
                    return False
                length = int(value)
            elif name == "transfer-encoding":
                self._answer(501, b"", close=True)
                return False
            elif name == "connection":
                close = value.lower() == "close"
        total = end + 4 + length
        if len(self._buf) < total:
            return False
        body = bytes(self._buf[end + 4 : total])
        del self._buf[:total]
        status, answer = self._state.handle(parts[0], parts[1], headers, body)
        self._answer(status, answer, close=close)
        return not close

    def _answer(self, status: int, body: bytes, *, close: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Content-Type: application/json\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        self._transport.write(head.encode() + body)
        if close:
            self._buf.clear()
            self._transport.close()


async def _receive(port: int, outfile: Path, secret: str) -> None:
    loop = asyncio.get_running_loop()
    state = _ReceiverState(secret)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(
        lambda: _ReceiverProtocol(state), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    parent = os.getppid()
    deadline = loop.time() + RECEIVER_MAX_LIFETIME_S
    try:
        while not stop.is_set() and loop.time() < deadline and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        server.close()
        state.write(outfile)


def run_receiver(port: int, outfile: Path) -> int:
    asyncio.run(_receive(port, outfile, SECRET))
    return 0


def read_records(path: Path) -> list[Record]:
    out: list[Record] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        kind, arrival, payment_id, status, attempt, sig = line.split("\t")
        out.append(Record(kind, float(arrival), payment_id, status, attempt, sig == "1"))
    return out


def receiver_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        stats: dict[str, int] = json.loads(r.read())
        return stats
