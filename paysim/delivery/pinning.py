"""From a webhook URL to the address a request goes to: parsed once, resolved, SSRF-checked, pinned.

``Pinner`` is owned by one webhook sender. ``target(url)`` parses a URL once
(httpx's parsing is costly) and raises ``UnsendableUrl`` for one nothing can
send; ``pinned(target)`` resolves the host through ``ssrf.resolve`` (which
raises ``BlockedDestination`` for an address the policy refuses), caches the
answer for 30 s and returns the URL with its host replaced by the approved
address. The request then carries the original ``Host`` header and TLS server
name (``Target``), so DNS cannot change between the check and the connection.
Both caches are bounded (cleared when full).
"""

from __future__ import annotations

import httpx
import trio

from paysim.delivery import ssrf
from paysim.delivery.target import Target

DNS_TTL_S = 30.0
MAX_CACHED = 10_000
_MAX_PINNED_PER_TARGET = 16


class Pinner:
    def __init__(self, policy: ssrf.SsrfPolicy) -> None:
        self._policy = policy
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._targets: dict[str, Target] = {}

    def target(self, webhook_url: str) -> Target:
        """What a URL means for a delivery, parsed once per URL.

        Raises ``UnsendableUrl`` for a URL nothing can send.
        """
        target = self._targets.get(webhook_url)
        if target is None:
            if len(self._targets) >= MAX_CACHED:
                self._targets.clear()
            target = self._targets[webhook_url] = Target.parse(webhook_url)
        return target

    async def pinned(self, target: Target) -> httpx.URL:
        """The URL with its host replaced by an address the SSRF guard approved."""
        url = target.url
        key = (target.host, target.port)
        now = trio.current_time()
        cached = self._dns.get(key)
        if cached is not None and cached[0] > now:
            addresses = cached[1]
        else:
            addresses = await ssrf.resolve(self._policy, target.host, target.port)
            if len(self._dns) >= MAX_CACHED:
                self._dns.clear()
            self._dns[key] = (now + DNS_TTL_S, addresses)
        pinned = target.pinned.get(addresses[0])
        if pinned is None:
            if len(target.pinned) >= _MAX_PINNED_PER_TARGET:
                target.pinned.clear()
            pinned = target.pinned[addresses[0]] = url.copy_with(host=addresses[0])
        return pinned
