"""Many grpcio calls in flight at once (futures), for the fault tests that count thousands.

``fire`` runs in a worker thread (``trio.to_thread.run_sync``): it keeps at most
``in_flight`` futures outstanding, records each call's ``Outcome`` (its code,
details, answer or trailers, and the seconds from sending to the answer as
grpcio's callback saw it) and returns them in request order. Every call has
grpcio's own timeout, so nothing here can hang past it.

``classify`` names the fault a stock client saw from the code and the message
paysim sends (``paysim.faults.policy``): the same code can be an injected
error or a lost answer (UNAVAILABLE), or an injected error or a reset stream
(INTERNAL), and the message tells them apart.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from prometheus_client.parser import text_string_to_metric_families

from paysim.config import Settings
from paysim.faults.policy import LOST_MESSAGE
from paysim.observability import logging as paysim_logging
from tests.integration.faults.conftest import chaos_settings

TIMEOUT_S = 60.0


def held_settings(seed: int = 17) -> Settings:
    """``chaos_settings`` whose intents never resolve by themselves during a test (1 h)."""
    settings = chaos_settings(seed=seed)
    simulation = dataclasses.replace(settings.simulation, default_delay_s=3600.0)
    return dataclasses.replace(settings, simulation=simulation)


def quiet_logs() -> Iterator[None]:
    """Warnings only while thousands of calls run (one info line per RPC costs the
    server a third of its time); the defaults come back afterwards. A fixture body."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    paysim_logging.configure(level="warning")
    structlog.configure(cache_logger_on_first_use=False)
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


@dataclass(frozen=True)
class Outcome:
    code: str  # grpc.StatusCode's name
    details: str
    response: Any  # the answer when OK, else None
    trailers: dict[str, str]
    seconds: float


def fire(
    method: Any, requests: Sequence[Any], in_flight: int = 256, metadata: Any = None
) -> list[Outcome]:
    """Send every request through ``method.future``, ``in_flight`` at a time; the outcomes."""
    return fire_each([(method, r) for r in requests], in_flight, metadata)


def fire_each(
    calls: Sequence[tuple[Any, Any]], in_flight: int = 256, metadata: Any = None
) -> list[Outcome]:
    """``fire`` for (method, request) pairs: different RPCs interleaved in one stream."""
    slots = threading.Semaphore(in_flight)
    outcomes: list[Outcome | None] = [None] * len(calls)
    left = [len(calls)]
    lock = threading.Lock()
    all_done = threading.Event()
    if not calls:
        all_done.set()

    def finished(index: int, sent: float) -> Callable[[Any], None]:
        def record(future: Any) -> None:
            took = time.perf_counter() - sent
            code = future.code()
            ok = code == grpc.StatusCode.OK
            outcomes[index] = Outcome(
                code=code.name,
                details=future.details() or "",
                response=future.result() if ok else None,
                trailers={k: str(v) for k, v in (future.trailing_metadata() or ())},
                seconds=took,
            )
            slots.release()
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    all_done.set()

        return record

    for index, (method, request) in enumerate(calls):
        slots.acquire()
        sent = time.perf_counter()
        future = method.future(request, timeout=TIMEOUT_S, metadata=metadata)
        future.add_done_callback(finished(index, sent))
    assert all_done.wait(TIMEOUT_S + 10), "grpcio calls still outstanding"
    return [o for o in outcomes if o is not None]


_ERROR_MESSAGES = {
    ("UNAVAILABLE", "the payment gateway is unavailable; try again"): "error:UNAVAILABLE",
    ("DEADLINE_EXCEEDED", "the payment gateway timed out"): "error:DEADLINE_EXCEEDED",
    ("RESOURCE_EXHAUSTED", "the payment gateway is overloaded; retry later"): (
        "error:RESOURCE_EXHAUSTED"
    ),
    ("INTERNAL", "the payment gateway failed"): "error:INTERNAL",
    ("UNAVAILABLE", LOST_MESSAGE): "lost:UNAVAILABLE",
}


def classify(outcome: Outcome) -> str:
    """``ok``, ``error:CODE``, ``lost:UNAVAILABLE``, ``lost:RESET``, or ``other:CODE: details``."""
    if outcome.code == "OK":
        return "ok"
    known = _ERROR_MESSAGES.get((outcome.code, outcome.details))
    if known is not None:
        return known
    # RST_STREAM(INTERNAL_ERROR): grpcio's own message, not one paysim sent.
    if outcome.code == "INTERNAL" and "RST_STREAM" in outcome.details:
        return "lost:RESET"
    return f"other:{outcome.code}: {outcome.details}"


def tally(outcomes: Sequence[Outcome]) -> Counter[str]:
    return Counter(classify(o) for o in outcomes)


def fault_counts(metrics_text: str, rpc: str) -> Counter[str]:
    """``paysim_api_faults_total`` for ``rpc``, keyed as ``classify`` names what a client saw."""
    kinds = {"error": "error", "lost_answer": "lost"}
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "paysim_api_faults":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels["rpc"] == rpc:
                kind = kinds.get(labels["kind"], labels["kind"])
                out[f"{kind}:{labels['code']}"] += int(sample.value)
    return out


def within_binomial(observed: int, n: int, p: float, sd: float = 5.0) -> bool:
    """``observed`` successes of ``n`` within ``sd`` standard deviations of ``n * p``."""
    bound: float = sd * (n * p * (1 - p)) ** 0.5
    return abs(observed - n * p) <= bound
