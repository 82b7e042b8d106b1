"""The SSRF guard: addresses, literal URLs at CreatePaymentIntent, and resolution at send time."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

import pytest
import trio

from paysim.config import Settings, WebhookSettings
from paysim.delivery.ssrf import (
    BlockedDestination,
    SsrfPolicy,
    blocked_reason,
    check_host,
    check_literal,
    resolve,
)
from paysim.errors import InvalidArgument

PRODUCTION = SsrfPolicy(allow_loopback=False, allow_private=False, allowed_hosts=frozenset())
DEVELOPMENT = SsrfPolicy(allow_loopback=True, allow_private=True, allowed_hosts=frozenset())

METADATA = "cloud metadata"
LINK_LOCAL = "link-local"
LOOPBACK = "loopback"
PRIVATE = "private"

# address, what production says, what development says (None: allowed)
ADDRESSES: list[tuple[str, str | None, str | None]] = [
    ("127.0.0.1", LOOPBACK, None),
    ("127.8.9.10", LOOPBACK, None),
    ("::1", LOOPBACK, None),
    ("10.1.2.3", PRIVATE, None),
    ("172.16.0.1", PRIVATE, None),
    ("172.31.255.255", PRIVATE, None),
    ("172.32.0.1", None, None),  # just past 172.16/12
    ("192.168.1.1", PRIVATE, None),
    ("100.64.0.1", PRIVATE, None),  # CGNAT
    ("fc00::1", PRIVATE, None),
    ("fd12:3456::1", PRIVATE, None),
    ("169.254.169.254", METADATA, METADATA),
    ("fd00:ec2::254", METADATA, METADATA),
    ("100.100.100.200", METADATA, METADATA),
    ("169.254.1.1", LINK_LOCAL, LINK_LOCAL),
    ("fe80::1", LINK_LOCAL, LINK_LOCAL),
    ("::ffff:169.254.169.254", METADATA, METADATA),
    ("::ffff:127.0.0.1", LOOPBACK, None),
    ("::ffff:10.0.0.1", PRIVATE, None),
    ("64:ff9b::a9fe:a9fe", METADATA, METADATA),  # NAT64 of 169.254.169.254
    ("2002:a9fe:a9fe::1", METADATA, METADATA),  # 6to4 of 169.254.169.254
    ("0.0.0.0", "unspecified", "unspecified"),
    ("0.1.2.3", "unspecified", "unspecified"),
    ("::", "unspecified", "unspecified"),
    ("224.0.0.1", "multicast", "multicast"),
    ("ff02::1", "multicast", "multicast"),
    ("240.0.0.1", "reserved", "reserved"),
    ("255.255.255.255", "reserved", "reserved"),
    ("8.8.8.8", None, None),
    ("2001:4860:4860::8888", None, None),
    ("::ffff:8.8.8.8", None, None),
    ("64:ff9b::808:808", None, None),  # NAT64 of 8.8.8.8: fine on an IPv6-only network
]


@pytest.mark.parametrize(("address", "production", "development"), ADDRESSES)
def test_blocked_reason(address: str, production: str | None, development: str | None) -> None:
    ip = ipaddress.ip_address(address)
    for policy, expected in ((PRODUCTION, production), (DEVELOPMENT, development)):
        reason = blocked_reason(policy, ip)
        if expected is None:
            assert reason is None, policy
        else:
            assert reason is not None, policy
            assert reason.startswith(str(ip))
            assert expected in reason


def test_the_reason_names_the_ipv4_address_inside_an_ipv6_one() -> None:
    mapped = ipaddress.ip_address("::ffff:127.0.0.1")
    reason = blocked_reason(PRODUCTION, mapped)
    assert reason is not None
    assert reason.startswith(f"{mapped} (= 127.0.0.1) is a loopback address")


def test_loopback_and_private_are_allowed_separately() -> None:
    loopback_only = SsrfPolicy(allow_loopback=True, allow_private=False)
    assert blocked_reason(loopback_only, ipaddress.ip_address("127.0.0.1")) is None
    assert blocked_reason(loopback_only, ipaddress.ip_address("10.0.0.1")) is not None
    private_only = SsrfPolicy(allow_loopback=False, allow_private=True)
    assert blocked_reason(private_only, ipaddress.ip_address("10.0.0.1")) is None
    assert blocked_reason(private_only, ipaddress.ip_address("127.0.0.1")) is not None


def test_policy_from_settings() -> None:
    webhook = WebhookSettings(
        allowed_hosts=frozenset({"hooks.internal.", "[::1]", "10.0.0.5"}),
        allow_loopback=False,
        allow_private=True,
    )
    assert SsrfPolicy.from_settings(webhook) == SsrfPolicy(
        allow_loopback=False,
        allow_private=True,
        allowed_hosts=frozenset({"hooks.internal", "::1", "10.0.0.5"}),
    )
    for environment, allowed in (("development", True), ("staging", False), ("production", False)):
        policy = SsrfPolicy.from_settings(Settings.from_env({"ENVIRONMENT": environment}).webhook)
        assert (policy.allow_loopback, policy.allow_private) == (allowed, allowed)


# --- check_literal ----------------------------------------------------------

ALLOW_LISTED = SsrfPolicy(
    allow_loopback=False,
    allow_private=False,
    allowed_hosts=frozenset({"127.0.0.1", "::1", "169.254.169.254", "hooks.internal"}),
)

# url, policy, the words of the refusal (None: accepted)
LITERALS: list[tuple[str, SsrfPolicy, str | None]] = [
    ("http://127.0.0.1:8080/hook", PRODUCTION, "host 127.0.0.1 is a loopback address"),
    ("http://127.0.0.1:8080/hook", DEVELOPMENT, None),
    ("http://[::1]:9000/", PRODUCTION, "host ::1 is a loopback address"),
    ("https://10.0.0.8/hook", PRODUCTION, "private"),
    ("https://10.0.0.8/hook", DEVELOPMENT, None),
    ("http://169.254.169.254/latest/meta-data/", DEVELOPMENT, "cloud metadata"),
    ("http://[fd00:ec2::254]/", DEVELOPMENT, "cloud metadata"),
    ("http://[::ffff:a9fe:a9fe]/", DEVELOPMENT, "(= 169.254.169.254) is a cloud metadata"),
    ("http://0.0.0.0:8030/", DEVELOPMENT, "unspecified"),
    # Forms the C resolver reads as IPv4 addresses.
    ("http://2130706433/", PRODUCTION, "host 2130706433 (= 127.0.0.1) is a loopback"),
    ("http://0x7f.1/", PRODUCTION, "(= 127.0.0.1) is a loopback"),
    ("http://0177.0.0.1/", PRODUCTION, "(= 127.0.0.1) is a loopback"),
    ("http://127.1/", PRODUCTION, "(= 127.0.0.1) is a loopback"),
    ("http://0xA9FEA9FE/", DEVELOPMENT, "(= 169.254.169.254) is a cloud metadata"),
    ("http://2852039166/", DEVELOPMENT, "(= 169.254.169.254) is a cloud metadata"),
    # Whatever precedes "@" is user information; the host is after it.
    ("http://8.8.8.8@127.0.0.1/", PRODUCTION, "loopback"),
    ("http://8.8.8.8/", PRODUCTION, None),
    ("http://[2001:4860:4860::8888]/", PRODUCTION, None),
    # Names that are loopback by definition (RFC 6761) are refused without DNS.
    ("http://localhost:8080/", PRODUCTION, "host localhost is a loopback name"),
    ("http://LocalHost./", PRODUCTION, "loopback name"),
    ("http://hooks.localhost/", PRODUCTION, "loopback name"),
    ("http://a.b.localhost:9/", PRODUCTION, "loopback name"),
    ("http://localhost.localdomain/", PRODUCTION, "loopback name"),
    ("http://ip6-localhost/", PRODUCTION, "loopback name"),
    ("http://ip6-loopback/", PRODUCTION, "loopback name"),
    ("http://localhost6/", PRODUCTION, "loopback name"),
    ("http://localhost:8080/", DEVELOPMENT, None),
    ("http://hooks.localhost/", DEVELOPMENT, None),
    ("http://localhost/", SsrfPolicy(allow_loopback=False, allow_private=True), "loopback"),
    ("http://localhost/", SsrfPolicy(True, True, frozenset({"localhost"})), None),
    ("http://localhostx/", PRODUCTION, None),  # a name like any other
    ("http://localhost.example.com/", PRODUCTION, None),
    # Other names are resolved at send time, not here.
    ("https://hooks.example.com/paysim", PRODUCTION, None),
    ("http://deadbeef/", PRODUCTION, None),  # hex digits, but not a number inet_aton takes
    ("http://127.0.0.1.nip.io/", PRODUCTION, None),
    # The allow-list admits loopback and private literals, never cloud metadata.
    ("http://127.0.0.1:8080/", ALLOW_LISTED, None),
    ("http://[::1]/", ALLOW_LISTED, None),
    ("http://2130706433/", ALLOW_LISTED, "loopback"),  # another spelling is another host
    ("http://169.254.169.254/", ALLOW_LISTED, "cloud metadata"),
    # Not a URL at all: request validation reports that.
    ("http://[::1/", PRODUCTION, None),
]


@pytest.mark.parametrize(("url", "policy", "words"), LITERALS)
def test_check_literal(url: str, policy: SsrfPolicy, words: str | None) -> None:
    if words is None:
        check_literal(policy, url)
        return
    with pytest.raises(InvalidArgument) as info:
        check_literal(policy, url)
    assert info.value.field == "webhook_url"
    assert words in info.value.reason


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "host ::1 is a loopback"),
        ("[::1]", "loopback"),
        ("2130706433", "(= 127.0.0.1)"),
        ("0x7f.1", "(= 127.0.0.1)"),
        ("localhost", "loopback name"),
        ("hooks.example.com", None),
    ],
)
def test_check_host_judges_a_host_already_parsed(host: str, words: str | None) -> None:
    """What CreatePaymentIntent runs on the host httpx will connect to."""
    if words is None:
        check_host(PRODUCTION, host)
        return
    with pytest.raises(InvalidArgument, match=re.escape(words)):
        check_host(PRODUCTION, host)


def test_a_refusal_says_what_to_do() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_literal(PRODUCTION, "http://192.168.0.10/hook")
    assert "WEBHOOK_ALLOWED_HOSTS" in info.value.reason
    assert "/hook" not in info.value.message


# --- resolve ----------------------------------------------------------------


class FakeResolver(trio.abc.HostnameResolver):
    """Answers from a table, as the system resolver would for SOCK_STREAM."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        assert host is not None
        assert type == socket.SOCK_STREAM
        addresses = self.table.get(host.decode().lower().rstrip("."))
        if addresses is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        assert isinstance(port, int)
        infos: list[Any] = []
        for a in addresses:
            if ":" in a:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)))
        return infos

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


@pytest.fixture
async def dns() -> None:
    # The resolver is a trio RunVar: it lasts for this test's run only.
    trio.socket.set_custom_hostname_resolver(
        FakeResolver(
            {
                "hooks.example": ["93.184.216.34", "2606:2800:220:1::", "93.184.216.34"],
                "rebind.example": ["93.184.216.34", "10.0.0.1"],
                "hooks.internal": ["10.0.0.7"],
                "metadata.internal": ["169.254.169.254"],
            }
        )
    )


async def test_resolve_localhost_is_refused_in_production() -> None:
    with pytest.raises(BlockedDestination, match=r"localhost is a loopback name"):
        await resolve(PRODUCTION, "localhost", 80)


@pytest.mark.parametrize("host", ["hooks.localhost", "ip6-localhost", "Localhost.Localdomain."])
async def test_resolve_refuses_loopback_names_without_asking_dns(dns: None, host: str) -> None:
    # The fake resolver knows none of these: the refusal comes before any lookup.
    with pytest.raises(BlockedDestination, match="loopback name"):
        await resolve(PRODUCTION, host, 80)


async def test_resolve_localhost_is_allowed_in_development() -> None:
    addresses = await resolve(DEVELOPMENT, "localhost", 80)
    assert addresses[0] in ("127.0.0.1", "::1")
    assert "127.0.0.1" in addresses
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)


async def test_resolve_returns_each_address_once_in_the_resolvers_order(dns: None) -> None:
    assert await resolve(PRODUCTION, "hooks.example", 443) == ["93.184.216.34", "2606:2800:220:1::"]


async def test_one_bad_address_refuses_the_host(dns: None) -> None:
    with pytest.raises(
        BlockedDestination, match=r"rebind\.example resolves to 10\.0\.0\.1, a private"
    ):
        await resolve(PRODUCTION, "rebind.example", 443)


async def test_an_allow_listed_host_may_resolve_to_a_private_address(dns: None) -> None:
    assert await resolve(ALLOW_LISTED, "hooks.internal", 8080) == ["10.0.0.7"]
    assert await resolve(ALLOW_LISTED, "Hooks.Internal.", 8080) == ["10.0.0.7"]
    with pytest.raises(BlockedDestination, match="private"):
        await resolve(PRODUCTION, "hooks.internal", 8080)


async def test_cloud_metadata_is_refused_even_for_an_allow_listed_host(dns: None) -> None:
    listed = SsrfPolicy(True, True, frozenset({"metadata.internal", "169.254.169.254"}))
    with pytest.raises(BlockedDestination, match="cloud metadata"):
        await resolve(listed, "metadata.internal", 80)
    with pytest.raises(BlockedDestination, match="cloud metadata"):
        await resolve(listed, "169.254.169.254", 80)


@pytest.mark.parametrize("host", ["2130706433", "127.1", "[::1]", "::ffff:127.0.0.1"])
async def test_resolve_judges_literals_whatever_their_spelling(host: str) -> None:
    with pytest.raises(BlockedDestination, match="loopback"):
        await resolve(PRODUCTION, host, 80)


async def test_a_resolver_failure_is_an_oserror_not_a_refusal(dns: None) -> None:
    with pytest.raises(OSError, match="not known") as info:
        await resolve(PRODUCTION, "nowhere.example", 80)
    assert not isinstance(info.value, BlockedDestination)
    assert not issubclass(BlockedDestination, OSError)
