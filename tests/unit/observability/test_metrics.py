"""Metrics: one registry per object, go-grpc-prometheus names, exposition formats."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

import paysim
from paysim.domain.state import TRANSITIONS
from paysim.observability.metrics import REJECT_REASONS, Metrics

GRPC = {"grpc_type": "unary", "grpc_service": "payment.v1.PaymentService"}


def test_each_instance_owns_a_fresh_registry() -> None:
    first, second = Metrics(), Metrics()  # would raise "Duplicated timeseries" if global
    first.payment_created("approve")
    assert first.registry is not second.registry
    assert (
        first.registry.get_sample_value("paysim_payments_created_total", {"scenario": "approve"})
        == 1.0
    )
    assert (
        second.registry.get_sample_value("paysim_payments_created_total", {"scenario": "approve"})
        == 0.0
    )


def test_uses_the_registry_it_is_given() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert metrics.registry is registry
    assert registry.get_sample_value("paysim_build_info", {"version": paysim.__version__}) == 1.0


def test_rpc_started_and_handled() -> None:
    metrics = Metrics()
    get = metrics.registry.get_sample_value
    labels = {**GRPC, "grpc_method": "CreatePaymentIntent"}
    for _ in range(3):
        metrics.rpc_started("unary", labels["grpc_service"], "CreatePaymentIntent")
    metrics.rpc_handled("unary", labels["grpc_service"], "CreatePaymentIntent", "OK", 0.003)
    metrics.rpc_handled("unary", labels["grpc_service"], "CreatePaymentIntent", "OK", 0.2)
    metrics.rpc_handled(
        "unary", labels["grpc_service"], "CreatePaymentIntent", "INVALID_ARGUMENT", 0.001
    )

    assert get("grpc_server_started_total", labels) == 3.0
    assert get("grpc_server_msg_received_total", labels) == 3.0
    assert get("grpc_server_msg_sent_total", labels) == 2.0  # only OK unary calls send
    assert get("grpc_server_handled_total", {**labels, "grpc_code": "OK"}) == 2.0
    assert get("grpc_server_handled_total", {**labels, "grpc_code": "INVALID_ARGUMENT"}) == 1.0
    assert get("grpc_server_handling_seconds_count", labels) == 3.0
    assert get("grpc_server_handling_seconds_bucket", {**labels, "le": "0.005"}) == 2.0
    assert get("grpc_server_handling_seconds_bucket", {**labels, "le": "0.25"}) == 3.0
    assert get("grpc_server_handling_seconds_bucket", {**labels, "le": "10.0"}) == 3.0


def test_streaming_calls_do_not_count_a_sent_message() -> None:
    metrics = Metrics()
    metrics.rpc_started("server_stream", "grpc.health.v1.Health", "Watch")
    metrics.rpc_handled("server_stream", "grpc.health.v1.Health", "Watch", "OK", 1.0)
    labels = {
        "grpc_type": "server_stream",
        "grpc_service": "grpc.health.v1.Health",
        "grpc_method": "Watch",
    }
    assert metrics.registry.get_sample_value("grpc_server_msg_sent_total", labels) == 0.0
    assert metrics.registry.get_sample_value("grpc_server_msg_received_total", labels) == 1.0


def test_paysim_metrics() -> None:
    metrics = Metrics()
    get = metrics.registry.get_sample_value
    metrics.payment_created("delay")
    metrics.payment_created("delay")
    metrics.payment_transition("PENDING", "COMPLETED")
    metrics.pending_changed(+1)
    metrics.pending_changed(+1)
    metrics.pending_changed(-1)
    metrics.payment_rejected("overload")
    metrics.http_request("/health", 200)
    metrics.http_request("other", 404)

    assert get("paysim_payments_created_total", {"scenario": "delay"}) == 2.0
    assert get("paysim_payments_created_total", {"scenario": "timeout"}) == 0.0  # pre-created
    transition = {"from_status": "PENDING", "to_status": "COMPLETED"}
    assert get("paysim_payment_transitions_total", transition) == 1.0
    assert get("paysim_payments_pending") == 1.0
    assert get("paysim_payments_rejected_total", {"reason": "overload"}) == 1.0
    assert get("paysim_http_requests_total", {"path": "/health", "code": "200"}) == 1.0
    assert get("paysim_http_requests_total", {"path": "other", "code": "404"}) == 1.0


def test_render_text_by_default() -> None:
    metrics = Metrics()
    metrics.rpc_handled("unary", "payment.v1.PaymentService", "GetPayment", "NOT_FOUND", 0.01)
    for accept in (None, "", "text/plain", "*/*"):
        body, content_type = metrics.render(accept)
        assert content_type.startswith("text/plain")
        assert b'grpc_server_handled_total{grpc_code="NOT_FOUND"' in body
        assert b"# EOF" not in body


def test_render_openmetrics_when_asked() -> None:
    metrics = Metrics()
    metrics.payment_created("approve")
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b'paysim_payments_created_total{scenario="approve"} 1.0' in body


def test_every_transition_and_reject_reason_is_at_zero_before_the_first_payment() -> None:
    # So rate() works from the first event, and no series is born mid-storm.
    metrics = Metrics()
    get = metrics.registry.get_sample_value
    legal = [(old.name, new.name) for old, targets in TRANSITIONS.items() for new in targets]
    assert ("PENDING", "CANCELLED") in legal
    for old, new in legal:
        labels = {"from_status": old, "to_status": new}
        assert get("paysim_payment_transitions_total", labels) == 0.0, (old, new)
    assert (
        get("paysim_payment_transitions_total", {"from_status": "FAILED", "to_status": "PENDING"})
        is None
    )
    for reason in REJECT_REASONS:
        assert get("paysim_payments_rejected_total", {"reason": reason}) == 0.0, reason
