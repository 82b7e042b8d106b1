"""One webhook attempt: sign, pin, POST, and say what happened, never raising.

``WebhookSender.send`` is called by the dispatcher's workers; it owns nothing
but its ``Pinner`` (the httpx client belongs to the app root, which closes
it). It returns a ``Sent``: the result label for the metrics (``2xx``, ``4xx``,
``timeout``, ``error``, ``blocked``, ``unsendable``...), the HTTP status if
any, an error a person can act on, and a ``Retry-After`` (429/503) in seconds.

Containment: nothing a receiver or a stored URL does escapes ``send``. An
unexpected exception is that attempt's ``error``, logged with its type and
where it was raised, never with a traceback (its frames hold the signed body
and headers). Redirects are not followed.

The request is built here and handed to ``client.send`` (httpx's public
API), not built by ``client.post``: ``build_request`` merges the client's URL,
headers, cookies and query parameters anew for every request, about 40 µs of
CPU per webhook (issue 18). What it merged is fixed for a sender: the client's
default headers are read once, at construction, and go first, minus those the
webhook sets itself (so the wire carries the same headers as with
``client.post``, User-Agent after Connection); no cookies are sent
(receivers are other parties' servers); the timeout is the settings'.

The request is made with ``stream=`` and the header bytes, then ``read()``:
``content=`` made httpx re-scan the headers for Host and Content-Length and
append them (``Request._prepare``), 16.5 against 4.8 µs a request. Host and
Content-Length are written here instead, where ``_prepare`` put them (last), so
the request's headers are the same list as before.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import structlog
import trio

from paysim.config import WebhookSettings
from paysim.delivery import signing, ssrf
from paysim.delivery.pinning import Pinner
from paysim.delivery.target import UnsendableUrl
from paysim.domain.models import StatusChange

log = structlog.get_logger("paysim.webhooks")


@dataclass(frozen=True, slots=True)
class Sent:
    """What one attempt did."""

    result: str
    url: str  # redacted: for the journal
    seconds: float
    http_status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    excerpt: str = ""

    @property
    def ok(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300


class WebhookSender:
    def __init__(
        self,
        settings: WebhookSettings,
        client: httpx.AsyncClient,
        wall_clock: Callable[[], float],
        policy: ssrf.SsrfPolicy | None = None,
    ) -> None:
        """``policy``: where webhooks may go (default: built from ``settings``)."""
        self._settings = settings
        self._client = client
        self._now = wall_clock
        self._pinner = Pinner(
            policy if policy is not None else ssrf.SsrfPolicy.from_settings(settings)
        )
        # What client.build_request would add to every request (module docstring).
        encoding = client.headers.encoding
        self._defaults = [
            (name.encode(encoding), value.encode(encoding))
            for name, value in client.headers.multi_items()
            if name.lower() not in _OWN_HEADERS
        ]
        self._timeout = httpx.Timeout(settings.timeout_s).as_dict()

    async def send(self, change: StatusChange, body: bytes, attempt: int) -> Sent:
        """POST ``body`` for ``change`` (attempt number ``attempt``); see the module docstring."""
        started = trio.current_time()
        http_status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        excerpt = ""
        redacted = "(unsendable URL)"
        try:
            target = self._pinner.target(change.payment.webhook_url)
            redacted = target.redacted
            pinned = await self._pinner.pinned(target)
            headers = signing.build_headers(
                secrets=self._settings.secrets,
                style=self._settings.signature_style,
                webhook_id=change.event_id,
                timestamp=int(self._now()),
                attempt=attempt,
                body=body,
            )
            request = httpx.Request(
                "POST",
                pinned,
                headers=[
                    *self._defaults,
                    *[(name.encode(), value.encode()) for name, value in headers],
                    (b"Host", target.host_header.encode()),
                    (b"Content-Length", b"%d" % len(body)),
                ],
                stream=httpx.ByteStream(body),
                extensions={**target.extensions, "timeout": self._timeout},
            )
            request.read()
            response = await self._client.send(request, follow_redirects=False)
            http_status = response.status_code
            excerpt = excerpt_of(response.content)
            if http_status in (429, 503):
                retry_after = _retry_after(response.headers.get("retry-after"), self._now())
            result = f"{http_status // 100}xx"
        except UnsendableUrl as exc:
            error, result = f"unsendable: {exc}", "unsendable"
        except ssrf.BlockedDestination as exc:
            error, result = f"blocked: {exc}", "blocked"
        except httpx.TimeoutException:
            error, result = "timeout", "timeout"
        except (httpx.HTTPError, OSError) as exc:
            error, result = _describe(exc), "error"
        except Exception as exc:  # containment: see the module docstring
            error, result = f"unexpected {type(exc).__name__}", "error"
            # No traceback on purpose (its frames hold the signed body): TRY400 does not apply.
            log.error(  # noqa: TRY400
                "webhook attempt failed unexpectedly",
                payment_id=change.payment.payment_intent_id,
                event_id=change.event_id,
                error=type(exc).__name__,
                where=_where(exc),
            )
        seconds = trio.current_time() - started
        return Sent(result, redacted, seconds, http_status, error, retry_after, excerpt)


_EXCERPT_CHARS = 120
# Headers a webhook request sets itself: a client default of the same name is not sent.
_OWN_HEADERS = frozenset({"host", "content-length"}) | signing.HEADER_NAMES


def excerpt_of(content: bytes) -> str:
    """The start of a receiver's answer for the journal: printable text, bounded."""
    text = content[: _EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    return "".join(ch if ch.isprintable() else " " for ch in text)[:_EXCERPT_CHARS].strip()


def _describe(exc: BaseException) -> str:
    """An error kind a person can act on, without reprs or addresses."""
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol error from the receiver"
    if isinstance(exc, OSError):
        return "address resolution or connection failed"
    return type(exc).__name__


def _where(exc: BaseException) -> str:
    """``file.py:line`` where ``exc`` was raised: enough to find a bug, no frame contents."""
    tb = exc.__traceback__
    if tb is None:
        return "unknown"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
