"""The reservation service, as the worker tells it a payment's outcome.

``Reservations.tell`` sends ``PATCH {RESERVATION_API_URL}/internal/reservations/{id}``
with ``{"status":"CONFIRMED"}`` or ``{"status":"CANCELLED"}`` and says whether
it worked: None on a 2xx answer, else ``(reason, problem)`` with ``reason`` one
of ``http_status``, ``connection``, ``timeout`` (``FAILURE_REASONS``).

The service is reached through ``ReservationHttp``, the one method of
``paysim.adapters.http1_client.Http1Client`` the worker needs (a fake in the
unit tests): ``Http1Error`` is a connection or protocol failure, any status
comes back as an answer, and each call is bounded here with
``trio.fail_after`` (``reservation_timeout_s``, waiting for a connection
included). The PATCH is marked idempotent (it sets the status to a fixed
value), so the client may resend it once on a fresh connection when a
kept-alive one turns out closed.

Resource handling: ``Reservations`` does not own the HTTP client;
``make_http_client`` builds the one ``run_worker`` opens and closes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import quote

import trio

from paysim import __version__
from paysim.adapters.http1_client import Http1Client, Http1Error
from paysim.config import WorkerSettings
from paysim.domain.event_parsing import DECISIONS, PaymentEvent

_BODIES = {d: json.dumps({"status": d}, separators=(",", ":")).encode() for d in DECISIONS.values()}
_CONTENT_TYPE = ("Content-Type", "application/json")


class HttpAnswer(Protocol):
    @property
    def status(self) -> int: ...


class ReservationHttp(Protocol):
    """The HTTP client the worker calls the reservation service with (``Http1Client``)."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
        idempotent: bool | None = None,
    ) -> HttpAnswer:
        """The whole answer, whatever its status; ``Http1Error`` if there is none."""
        ...


def make_http_client(worker: WorkerSettings) -> Http1Client:
    """The client for the reservation service: one connection per concurrent handler.

    Not httpx: it cost the worker most of its CPU (see ``paysim.adapters.http1_client``).
    The connect gets the call's whole timeout; the worker bounds every call.
    """
    return Http1Client(
        max_connections=worker.concurrency,
        connect_timeout_s=worker.reservation_timeout_s,
        headers=[("User-Agent", f"PaymentSim-Worker/{__version__}")],
    )


class Reservations:
    """``settings.reservation_api_url`` through ``http``; ``configured`` is False without it."""

    def __init__(self, http: ReservationHttp, settings: WorkerSettings) -> None:
        self._http = http
        self._timeout_s = settings.reservation_timeout_s
        base = settings.reservation_api_url
        self._prefix = base.rstrip("/") + "/internal/reservations/" if base else None

    @property
    def configured(self) -> bool:
        return self._prefix is not None

    async def tell(self, event: PaymentEvent, decision: str) -> tuple[str, str] | None:
        """PATCH the reservation; None on 2xx, else ``(reason, problem)``."""
        assert self._prefix is not None
        url = self._prefix + quote(event.reservation_id, safe="")
        timeout_s = self._timeout_s
        try:
            with trio.fail_after(timeout_s):  # the whole call: waiting for a connection included
                response = await self._http.request(
                    "PATCH",
                    url,
                    body=_BODIES[decision],
                    headers=(_CONTENT_TYPE, ("X-Event-Id", event.event_id)),
                    idempotent=True,  # it sets a fixed status: sending it twice changes nothing
                )
        except trio.TooSlowError:
            return "timeout", f"no answer within {timeout_s:g} s"
        except Http1Error as exc:
            return "connection", str(exc)
        if 200 <= response.status < 300:
            return None
        return "http_status", f"HTTP {response.status}"
