"""A webhook URL nothing can send: refused at CreatePaymentIntent, contained at delivery.

Issue 13, finding 1: URLs that request validation (``urllib.parse``) and the
SSRF literal check accepted but httpx's parser refuses used to be accepted
with OK; when the timer fired, ``httpx.InvalidURL`` escaped the dispatcher and
ended the process (and, handed over through the Redis store, every replica
that took the change). Now CreatePaymentIntent parses the URL with httpx and
refuses it, and a stored change that still carries one (written by an older
version) is dead-lettered at once without ending anything.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
import trio

from paysim.config import Settings, WebhookSettings
from paysim.delivery.ssrf import SsrfPolicy
from paysim.delivery.target import SendableCheck, Target, UnsendableUrl, check_sendable
from paysim.delivery.webhook_dispatcher import DispatcherSeams, WebhookDispatcher
from paysim.errors import InvalidArgument
from paysim.observability.metrics import Metrics
from tests.grpc_helpers import (
    StartApp,
    call,
    call_error,
    create_request,
    make_settings,
    payment_stub,
)
from tests.unit.delivery.test_webhook_dispatcher import SECRET, Receiver, change

# Accepted by request validation and by the SSRF literal check in development,
# refused by httpx: each of these used to end the process.
UNSENDABLE = {
    "ipv4-octet-over-255": "http://999.1.1.1/hook",
    "ipv4-leading-zero": "http://1.2.3.04/hook",
    "ipv4-octal-loopback": "http://0177.0.0.1:8080/hook",
    "idna-soft-hyphen": "http://exa\u00admple.com/hook",
    "idna-zero-width-space": "https://exa\u200bmple.com/hook",
    "ipv6-future-literal": "http://[v1.x]/hook",
}
# Only a stored change can carry these: request validation refuses them.
STORED_ONLY = {
    "punycode-not-decodable": "http://xn--a.com/",
    "port-out-of-range": "http://example.com:99999/",
    "port-zero": "http://example.com:0/",
    "scheme-ftp": "ftp://example.com/",
    "no-host": "http:///hook",
    "not-a-url": "not a url",
}

DEVELOPMENT = SsrfPolicy(allow_loopback=True, allow_private=True)
PRODUCTION = SsrfPolicy(allow_loopback=False, allow_private=False)


# -- the parser the dispatcher sends with ------------------------------------


@pytest.mark.parametrize("url", [*UNSENDABLE.values(), *STORED_ONLY.values()])
def test_target_parse_refuses_what_httpx_cannot_send(url: str) -> None:
    with pytest.raises(UnsendableUrl) as info:
        Target.parse(url)
    assert "/hook" not in str(info.value)


def test_target_parse_gives_the_ascii_host_it_will_resolve_and_pin() -> None:
    target = Target.parse("https://user:pw@Bücher.example:8443/h?token=t")
    assert target.host == "xn--bcher-kva.example"
    assert target.port == 8443
    assert target.host_header == "xn--bcher-kva.example:8443"
    assert target.extensions == {"sni_hostname": "xn--bcher-kva.example"}
    assert "pw" not in target.redacted
    assert "token" not in target.redacted
    v6 = Target.parse("http://[2001:db8::1]/")
    assert (v6.host, v6.port, v6.host_header) == ("2001:db8::1", 80, "[2001:db8::1]")


@pytest.mark.parametrize("url", UNSENDABLE.values(), ids=UNSENDABLE.keys())
def test_check_sendable_is_invalid_argument_saying_what_to_fix(url: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_sendable(DEVELOPMENT, url)
    assert info.value.field == "webhook_url"
    assert "cannot be sent" in info.value.reason
    assert "DNS name" in info.value.reason  # the hint: what a valid host looks like
    assert "/hook" not in info.value.message


def test_check_sendable_judges_the_host_httpx_reads() -> None:
    check_sendable(DEVELOPMENT, "http://2130706433:8080/")
    with pytest.raises(InvalidArgument, match="loopback"):
        check_sendable(PRODUCTION, "http://2130706433:8080/")
    with pytest.raises(InvalidArgument, match="loopback name"):
        check_sendable(PRODUCTION, "http://hooks.localhost/")
    check_sendable(None, "https://hooks.example.com/paysim")


def test_sendable_check_remembers_verdicts_within_a_bound() -> None:
    check = SendableCheck(PRODUCTION, max_cached=2)
    check("https://hooks.example.com/a")
    for _ in range(2):  # a remembered refusal is still a refusal, with the same words
        with pytest.raises(InvalidArgument, match="loopback name"):
            check("http://localhost/hook")
    check("https://hooks.example.com/b")  # the memo was full: it starts again
    assert len(check._verdicts) == 1
    with pytest.raises(InvalidArgument, match="cannot be sent"):
        check("http://999.1.1.1/")


# -- the dispatcher: a stored change with such a URL ---------------------------


@dataclasses.dataclass
class Running:
    dispatcher: WebhookDispatcher
    receiver: Receiver
    metrics: Metrics
    done: list[str]

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    """A dispatcher in its own nursery: if anything escaped it, the test would fail."""
    receiver = Receiver()
    metrics = Metrics()
    done: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        dispatcher = WebhookDispatcher(
            WebhookSettings(secrets=(SECRET,), max_attempts=3, concurrency=2),
            client,
            metrics,
            seams=DispatcherSeams(rng=random.Random(7), wall_clock=trio.current_time),
            on_done=done.append,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(dispatcher.run)
            yield Running(dispatcher, receiver, metrics, done)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "url",
    [*UNSENDABLE.values(), *STORED_ONLY.values()],
    ids=[*UNSENDABLE.keys(), *STORED_ONLY.keys()],
)
async def test_an_unsendable_stored_change_is_dead_lettered_and_the_next_is_delivered(
    running: Running, autojump_clock: Any, url: str
) -> None:
    start = trio.current_time()
    await running.dispatcher.notify(change("pay_bad", event_id="evt_bad", url=url))
    await running.dispatcher.notify(change("pay_good", event_id="evt_good"))
    await running.dispatcher.wait_idle()

    # Dead-lettered at once: one attempt, no request, no waiting for a retry.
    (attempt,) = running.dispatcher.journal.attempts("pay_bad")
    assert attempt.outcome == "unsendable"
    assert attempt.error is not None
    assert attempt.error.startswith("unsendable: ")
    assert "/hook" not in attempt.url
    assert running.metric("paysim_webhook_deliveries_total", outcome="unsendable") == 1
    assert running.metric("paysim_webhook_attempts_total", result="unsendable") == 1
    # Reported done, so the outbox (and the shared store) forget it.
    assert sorted(running.done) == ["evt_bad", "evt_good"]
    # The dispatcher still runs and delivered the good change, right away.
    (request,) = running.receiver.requests
    assert request.headers["x-webhook-id"] == "evt_good"
    assert running.metric("paysim_webhook_deliveries_total", outcome="delivered") == 1
    assert trio.current_time() == start
    assert running.dispatcher.pending_payment_ids() == []


class Exploding(Receiver):
    """A transport that fails in a way no handler anticipated."""

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers["x-webhook-id"] == "evt_boom":
            self.requests.append(request)
            raise RuntimeError("a receiver nobody anticipated")
        return await super().__call__(request)


async def test_an_unexpected_error_fails_the_attempt_not_the_dispatcher(
    autojump_clock: Any,
) -> None:
    receiver = Exploding()
    metrics = Metrics()
    done: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        dispatcher = WebhookDispatcher(
            WebhookSettings(secrets=(SECRET,), max_attempts=3, concurrency=2),
            client,
            metrics,
            seams=DispatcherSeams(rng=random.Random(7), wall_clock=trio.current_time),
            on_done=done.append,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(dispatcher.run)
            await dispatcher.notify(change("pay_boom", event_id="evt_boom"))
            await dispatcher.notify(change("pay_ok", event_id="evt_ok"))
            await dispatcher.wait_idle()
            nursery.cancel_scope.cancel()
    outcomes = [(a.outcome, a.error) for a in dispatcher.journal.attempts("pay_boom")]
    assert outcomes == [
        ("retry", "unexpected RuntimeError"),
        ("retry", "unexpected RuntimeError"),
        ("gave_up", "unexpected RuntimeError"),
    ]
    assert sorted(done) == ["evt_boom", "evt_ok"]
    delivered = [r.headers["x-webhook-id"] for r in receiver.requests]
    assert delivered.count("evt_boom") == 3
    assert "evt_ok" in delivered


# -- end to end: CreatePaymentIntent over real gRPC ----------------------------


@pytest.mark.parametrize("url", UNSENDABLE.values(), ids=UNSENDABLE.keys())
async def test_create_refuses_an_unsendable_webhook_url(app: Any, stub: Any, url: str) -> None:
    err = await call_error(stub.CreatePaymentIntent, create_request(webhook_url=url))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid webhook_url: cannot be sent" in err.details()
    assert "/hook" not in err.details()
    assert app.running.simulator.pending == 0
    assert app.notifier.changes == []


async def test_create_accepts_a_sendable_idna_webhook_url(stub: Any) -> None:
    created = await call(
        stub.CreatePaymentIntent, create_request(webhook_url="https://bücher.example/hook")
    )
    assert created.payment_intent_id


def production_webhooks() -> Settings:
    settings = make_settings()
    webhook = dataclasses.replace(settings.webhook, allow_loopback=False, allow_private=False)
    return dataclasses.replace(settings, webhook=webhook)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080/hook",
        "http://hooks.localhost/hook",
        "http://localhost.localdomain/hook",
        "http://ip6-localhost/hook",
    ],
)
async def test_create_refuses_loopback_names_where_loopback_is_not_allowed(
    start_app: StartApp, url: str
) -> None:
    app = await start_app(production_webhooks())
    with payment_stub(app.grpc_port) as stub:
        err = await call_error(stub.CreatePaymentIntent, create_request(webhook_url=url))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is a loopback name" in err.details()
    assert "WEBHOOK_ALLOWED_HOSTS" in err.details()
