"""The SSRF guard: which addresses a webhook may be sent to.

A webhook URL is chosen by the caller of CreatePaymentIntent, so without a
guard paysim would POST wherever it is told: to the cloud metadata service, to
an admin port on loopback, into the private network. The guard runs twice:
``check_literal``/``check_host`` at CreatePaymentIntent (a URL whose host is
an IP literal or a loopback name is refused at once with INVALID_ARGUMENT)
and ``resolve`` at send time (after DNS, for every address the name resolves
to). To be effective the caller must then connect to an address ``resolve``
returned, not resolve the name again (otherwise DNS could answer differently
the second time).

Policy, in the order it is applied to one address:

1. An IPv4 address embedded in IPv6 is judged as that IPv4 address: mapped
   (``::ffff:a.b.c.d``), NAT64 (``64:ff9b::/96``) and 6to4 (``2002::/16``).
2. Cloud metadata is **always** refused, even for a host in the allow-list:
   169.254.169.254 (AWS, GCP, Azure), fd00:ec2::254 (AWS IPv6),
   100.100.100.200 (Alibaba), and all of link-local 169.254.0.0/16, fe80::/10.
3. Unspecified addresses (0.0.0.0/8, ::) are refused: on Linux they reach
   the local host.
4. Loopback (127.0.0.0/8, ::1) is refused unless ``allow_loopback``.
5. Private (10/8, 172.16/12, 192.168/16, CGNAT 100.64/10, fc00::/7 and the
   deprecated site-local fec0::/10) is refused unless ``allow_private``.
6. Multicast and reserved addresses (``ipaddress``'s ``is_reserved``: 240/4,
   the broadcast address, unallocated IPv6) are refused.

Names that are loopback by definition (RFC 6761 §6.3: ``localhost`` and every
name under ``.localhost``; and the usual /etc/hosts aliases such as
``localhost.localdomain``, ``ip6-localhost``) are judged as loopback without
asking DNS, both at CreatePaymentIntent and at send time.

A host named in the allow-list (WEBHOOK_ALLOWED_HOSTS: compared lower-cased,
without brackets or a trailing dot) skips steps 3-6, never step 2. The policy
comes from configuration: development allows loopback and private addresses,
staging and production allow neither.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

from paysim.config import WebhookSettings
from paysim.errors import InvalidArgument

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_UNSPECIFIED = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"))
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
        "fec0::/10",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# What inet_aton may read as an IPv4 address: 2130706433, 0x7f.1, 0177.0.0.1, 127.1.
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")

# Loopback by definition: RFC 6761 §6.3, plus the aliases distributions put in /etc/hosts.
_LOOPBACK_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "localhost4",
        "localhost4.localdomain4",
        "localhost6",
        "localhost6.localdomain6",
        "ip6-localhost",
        "ip6-loopback",
    }
)

_ALLOWED_ONLY_IN_DEVELOPMENT = (
    "allowed only in development, or name the host in WEBHOOK_ALLOWED_HOSTS"
)


class BlockedDestination(Exception):
    """A webhook destination the guard refuses: a permanent delivery failure.

    Not a PaysimError: it is raised at send time, to the dispatcher, never to a
    gRPC caller. ``str()`` names the host and the address, never the URL path.
    """


@dataclass(frozen=True)
class SsrfPolicy:
    allow_loopback: bool
    allow_private: bool
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, webhook: WebhookSettings) -> SsrfPolicy:
        return cls(
            allow_loopback=webhook.allow_loopback,
            allow_private=webhook.allow_private,
            allowed_hosts=frozenset(_normalize(h) for h in webhook.allowed_hosts),
        )


def blocked_reason(policy: SsrfPolicy, address: IPAddress) -> str | None:
    """Why ``address`` is refused (e.g. "127.0.0.1 is a loopback address; …"), or None.

    The allow-list is about host names, so it plays no part here.
    """
    verdict = _verdict(policy, address)
    return None if verdict is None else f"{_display(str(address), address)} is {verdict[0]}"


def is_loopback_name(host: str) -> bool:
    """``localhost``, a name under ``.localhost`` (RFC 6761), or a usual alias of them."""
    name = _normalize(host)
    return name in _LOOPBACK_NAMES or name.endswith(".localhost")


def check_literal(policy: SsrfPolicy, url: str) -> None:
    """Refuse ``url`` when its host is an IP literal or a loopback name that the policy blocks.

    The host is the one ``urllib.parse`` reads; ``check_host`` judges a host
    already extracted (the dispatcher's, from httpx).

    Literals are what ``ipaddress`` parses (IPv4, bracketed IPv6) and, for a
    host made only of digits, hex digits, ``x`` and dots, what
    ``socket.inet_aton`` parses (``2130706433``, ``0x7f.1``, ``0177.0.0.1``,
    ``127.1``), since the C resolver reads those as IPv4 addresses too. A host
    name is not resolved here (``resolve`` does that at send time), and a URL
    that does not parse is left to request validation.
    """
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return
    if host:
        check_host(policy, host)


def check_host(policy: SsrfPolicy, host: str) -> None:
    """Refuse ``host`` (of a webhook URL) if it is an IP literal or loopback name the policy blocks.

    Raises ``InvalidArgument`` for ``webhook_url``. Other names pass: they are
    resolved, and judged, at send time.
    """
    listed = _normalize(host) in policy.allowed_hosts
    address = _literal(host.strip("[]"))
    if address is None:
        if is_loopback_name(host) and not policy.allow_loopback and not listed:
            raise InvalidArgument(
                "webhook_url",
                f"host {host} is a loopback name ({_ALLOWED_ONLY_IN_DEVELOPMENT})",
            )
        return
    verdict = _verdict(policy, address)
    if verdict is None:
        return
    phrase, metadata = verdict
    if not metadata and listed:
        return
    raise InvalidArgument("webhook_url", f"host {_display(host, address)} is {phrase}")


async def resolve(policy: SsrfPolicy, host: str, port: int) -> list[str]:
    """Resolve ``host`` and return its addresses (as strings, in the resolver's order).

    Every address must pass the guard (one bad address refuses the host: DNS
    may hand out any of them). For a host in the allow-list only cloud
    metadata is refused. Raises ``BlockedDestination`` when refused, and lets
    the resolver's ``OSError`` (``socket.gaierror``) through: that one may be
    temporary.
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    allowed = _normalize(name) in policy.allowed_hosts
    if is_loopback_name(name) and not policy.allow_loopback and not allowed:
        raise BlockedDestination(f"{name} is a loopback name ({_ALLOWED_ONLY_IN_DEVELOPMENT})")
    infos = await trio.socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise OSError(f"{name} resolved to no address")
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise BlockedDestination(f"{name} resolves to a non-IP address") from None
        verdict = _verdict(policy, address)
        if verdict is not None and (verdict[1] or not allowed):
            raise BlockedDestination(f"{name} resolves to {_display(text, address)}, {verdict[0]}")
    return addresses


def _verdict(policy: SsrfPolicy, address: IPAddress) -> tuple[str, bool] | None:
    """(what the address is, whether it is cloud metadata), or None when allowed."""
    address = _unwrap(address)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address; webhooks are never sent there", True
    if any(address in net for net in _LINK_LOCAL):
        return "link-local, where cloud metadata lives; webhooks are never sent there", True
    if any(address in net for net in _UNSPECIFIED):
        return "an unspecified address", False
    if address.is_loopback:
        if policy.allow_loopback:
            return None
        return f"a loopback address ({_ALLOWED_ONLY_IN_DEVELOPMENT})", False
    if any(address in net for net in _PRIVATE):
        if policy.allow_private:
            return None
        return f"a private address ({_ALLOWED_ONLY_IN_DEVELOPMENT})", False
    if address.is_multicast:
        return "a multicast address", False
    if address.is_reserved:
        return "a reserved address", False
    return None


def _unwrap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(address.packed[-4:])
    if address.sixtofour is not None:
        return address.sixtofour
    return address


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not _NUMERIC_HOST.fullmatch(host.lower()):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _normalize(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _display(written: str, address: IPAddress) -> str:
    """``written``, followed by the address it means when that reads differently."""
    meant = _unwrap(address)
    return written if str(meant) == written else f"{written} (= {meant})"
