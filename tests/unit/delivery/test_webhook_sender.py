"""What one webhook attempt puts on the wire, built without ``client.post``.

``WebhookSender`` builds its ``httpx.Request`` itself and hands it to
``client.send`` (issue 18: ``build_request`` cost ~40 µs a webhook). These
check that nothing the client used to merge in was lost or doubled.
"""

from __future__ import annotations

import hashlib
import hmac

import httpx

from paysim.config import WebhookSettings
from paysim.delivery import ssrf
from paysim.delivery.webhook_sender import WebhookSender
from paysim.domain.events import webhook_body
from tests.unit.delivery.test_webhook_dispatcher import change

SECRET = "s3cret"
NOW = 1_700_000_123.0


def sender_with(client: httpx.AsyncClient, timeout_s: float = 7.5) -> WebhookSender:
    settings = WebhookSettings(secrets=(SECRET,), timeout_s=timeout_s)
    return WebhookSender(settings, client, lambda: NOW, ssrf.SsrfPolicy.from_settings(settings))


async def test_the_request_carries_the_clients_defaults_then_the_webhooks_own() -> None:
    seen: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        ch = change(url="http://127.0.0.1:9/hooks?x=1")
        body = webhook_body(ch)
        sent = await sender_with(client).send(ch, body, attempt=3)

    assert sent.ok
    assert (sent.result, sent.http_status) == ("2xx", 204)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://127.0.0.1:9/hooks?x=1"
    assert request.content == body
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert [(k.decode(), v.decode()) for k, v in request.headers.raw] == [
        ("accept", "*/*"),
        ("accept-encoding", "gzip, deflate"),
        ("connection", "keep-alive"),
        ("Content-Type", "application/json"),
        ("User-Agent", "PaymentSim/1.0"),
        ("X-Webhook-Signature", f"sha256={signature}"),
        ("X-Webhook-Id", "evt_1"),
        ("X-Webhook-Timestamp", str(int(NOW))),
        ("X-Webhook-Attempt", "3"),
        ("Host", "127.0.0.1:9"),
        ("Content-Length", str(len(body))),
    ]
    assert request.extensions["timeout"] == {
        "connect": 7.5,
        "read": 7.5,
        "write": 7.5,
        "pool": 7.5,
    }


async def test_no_cookie_travels_and_a_default_user_agent_is_replaced() -> None:
    seen: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"set-cookie": "track=1; Path=/"})

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(receiver),
        cookies={"session": "abc"},
        headers={"User-Agent": "other/1", "X-Extra": "kept"},
    ) as client:
        sender = sender_with(client)
        for attempt in (1, 2):
            ch = change()
            await sender.send(ch, webhook_body(ch), attempt)

    for request in seen:
        assert "cookie" not in request.headers
        assert request.headers.get_list("user-agent") == ["PaymentSim/1.0"]
        assert request.headers["x-extra"] == "kept"


async def test_https_targets_keep_their_tls_name() -> None:
    seen: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    policy = ssrf.SsrfPolicy.from_settings(WebhookSettings())
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        sender = WebhookSender(WebhookSettings(secrets=(SECRET,)), client, lambda: NOW, policy)
        ch = change(url="https://127.0.0.1:8443/h")
        await sender.send(ch, webhook_body(ch), 1)

    (request,) = seen
    assert request.extensions["sni_hostname"] == "127.0.0.1"
    assert request.headers["host"] == "127.0.0.1:8443"
