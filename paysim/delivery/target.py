"""A webhook URL as the sender reads it: parsed once, by the parser that sends it.

Two parsers read a webhook URL: request validation (``urllib.parse``, in the
pure domain) and httpx, which sends it. They disagree at the edges: httpx
refuses ``999.1.1.1``, leading-zero octets (``0177.0.0.1``), hosts that are not
valid IDNA (a soft hyphen U+00AD, a zero-width space U+200B) and ``[v1.x]``,
all of which ``urllib.parse`` accepts; httpx accepts port 0 and 99999.

So ``Target.parse`` does everything the dispatcher derives from a URL before
its first network call (httpx's parse, the ASCII host it will resolve and pin,
the ``Host`` header, the TLS server name, the redacted form for the journal),
and raises ``UnsendableUrl`` for a URL that can never be sent. It runs twice:

* at CreatePaymentIntent, through ``check_sendable``, which turns the refusal
  into INVALID_ARGUMENT and adds the SSRF checks on the host httpx will use;
* in the dispatcher, for every change (a stored one may come from an older
  version that did not check), where ``UnsendableUrl`` fails that delivery for
  good instead of escaping the delivery task.

Nothing here does I/O: DNS and the SSRF check of resolved addresses happen at
send time (``ssrf.resolve``).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from paysim.delivery import ssrf
from paysim.errors import InvalidArgument

_FIELD = "webhook_url"
_HOST_HINT = (
    "use a DNS name, a dotted-decimal IPv4 address without leading zeros,"
    " or a bracketed IPv6 address"
)


class UnsendableUrl(Exception):
    """A webhook URL no attempt can ever send. ``str()`` says why; it never holds
    the URL's path, query or credentials."""


@dataclass(frozen=True)
class Target:
    url: httpx.URL
    host: str  # ASCII (IDNA-encoded), lower case, IPv6 without brackets: what is resolved
    port: int
    host_header: str
    redacted: str  # without credentials, query or fragment: safe for the journal
    extensions: dict[str, str]
    pinned: dict[str, httpx.URL]  # by approved address; filled by the dispatcher

    @classmethod
    def parse(cls, webhook_url: str) -> Target:
        """What ``webhook_url`` means for a delivery; ``UnsendableUrl`` if nothing can send it."""
        try:
            url = httpx.URL(webhook_url)
            host = url.raw_host.decode("ascii")
            url.host  # noqa: B018  (decodes IDNA: an invalid ``xn--`` label fails here)
            redacted = str(url.copy_with(username=None, password=None, query=None, fragment=None))
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            # ValueError covers the idna package's errors (UnicodeError subclasses).
            raise UnsendableUrl(_reason(exc)) from None
        if url.scheme not in ("http", "https"):
            raise UnsendableUrl("must be an absolute http:// or https:// URL")
        if not host:
            raise UnsendableUrl("has no host")
        if url.port is not None and not 0 < url.port < 65536:
            raise UnsendableUrl("has a port outside 1-65535")
        https = url.scheme == "https"
        bracketed = f"[{host}]" if ":" in host else host
        return cls(
            url=url,
            host=host,
            port=url.port or (443 if https else 80),
            host_header=bracketed if url.port is None else f"{bracketed}:{url.port}",
            redacted=redacted,
            extensions={"sni_hostname": host} if https else {},
            pinned={},
        )


def check_sendable(policy: ssrf.SsrfPolicy | None, webhook_url: str) -> None:
    """CreatePaymentIntent's check: refuse with INVALID_ARGUMENT what could never be sent.

    ``webhook_url`` has passed request validation. The SSRF checks (skipped
    when ``policy`` is None) judge the host both parsers see, so a URL the two
    read differently cannot slip a literal past either.
    """
    try:
        target = Target.parse(webhook_url)
    except UnsendableUrl as exc:
        raise InvalidArgument(_FIELD, f"cannot be sent: {exc}") from None
    if policy is not None:
        ssrf.check_literal(policy, webhook_url)
        ssrf.check_host(policy, target.host)


class SendableCheck:
    """``check_sendable`` for one policy, remembering verdicts by URL.

    Many intents share a webhook URL, and httpx's parse costs about 40 µs,
    more than the rest of CreatePaymentIntent. The memo is bounded (cleared
    when full), so distinct URLs cannot make it grow. Owned by the gRPC edge.
    """

    def __init__(self, policy: ssrf.SsrfPolicy | None, max_cached: int = 1024) -> None:
        self._policy = policy
        self._max_cached = max_cached
        self._verdicts: dict[str, InvalidArgument | None] = {}

    def __call__(self, webhook_url: str) -> None:
        try:
            verdict = self._verdicts[webhook_url]
        except KeyError:
            try:
                check_sendable(self._policy, webhook_url)
                verdict = None
            except InvalidArgument as exc:
                verdict = exc
            if len(self._verdicts) >= self._max_cached:
                self._verdicts.clear()
            self._verdicts[webhook_url] = verdict
        if verdict is not None:
            raise InvalidArgument(verdict.field, verdict.reason)


def _reason(exc: BaseException) -> str:
    """httpx's own words (they name the host or the port, never the path or query)."""
    if isinstance(exc, httpx.InvalidURL):
        text = str(exc)
        text = text[:1].lower() + text[1:]
        host_problem = "address" in text or "hostname" in text
        return f"{text}; {_HOST_HINT}" if host_problem else text
    if isinstance(exc, UnicodeError):
        return f"the host is not a valid internationalized (IDNA) name; {_HOST_HINT}"
    return "it is not a URL httpx can parse"
