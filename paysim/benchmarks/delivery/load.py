"""The load driver: CreatePaymentIntent at a constant arrival rate, open loop."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from paysim.benchmarks.delivery.constants import INTENT_TTL_MS


@dataclass
class Load:
    """What the generator recorded, per request index."""

    n: int
    sent: list[float] = field(default_factory=list)  # wall time the call was made
    answered: list[float] = field(default_factory=list)
    due: list[float] = field(default_factory=list)  # created_at + delay (server's clock)
    payment_ids: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    lateness: list[float] = field(default_factory=list)  # sent - scheduled, seconds
    issued: int = 0
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sent = [math.nan] * self.n
        self.answered = [math.nan] * self.n
        self.due = [math.nan] * self.n
        self.payment_ids = [""] * self.n
        self.lateness = [math.nan] * self.n

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1


def generate(
    stubs: list[Any], url: str, rate: float, duration: float, delay_s: float, run_id: str
) -> tuple[Load, float]:
    """Send ``rate * duration`` creates open loop; returns the record and the start (wall)."""
    import grpc

    from paysim._proto.proto.common.v1 import types_pb2
    from paysim._proto.proto.payment.v1 import payment_pb2

    n = round(rate * duration)
    load = Load(n)
    ttl_s = INTENT_TTL_MS / 1000.0
    amount = types_pb2.Money(amount=100_000, currency="KRW")
    approve = payment_pb2.PAYMENT_SCENARIO_APPROVE

    def on_done(i: int, future: Any) -> None:
        load.answered[i] = time.time()
        try:
            response = future.result()
        except grpc.RpcError as exc:
            load.error(f"grpc {exc.code().name}")
        except Exception as exc:  # cancelled, or a bug in a callback: counted
            load.error(type(exc).__name__)
        else:
            if response.HasField("error") or not response.payment_intent_id:
                load.error(f"app {response.error.code}")
            else:
                load.payment_ids[i] = response.payment_intent_id
                load.due[i] = response.expires_at.ToNanoseconds() / 1e9 - ttl_s + delay_s
        with load.lock:
            load.done += 1

    # Build the requests first: the loop below only sends.
    requests: list[Any] = [
        payment_pb2.CreatePaymentIntentRequest(
            reservation_id=f"rsv_{run_id}_{i}",
            user_id=f"user_bench_{i % 1000}",
            amount=amount,
            scenario=approve,
            webhook_url=url,
        )
        for i in range(n)
    ]
    mono0 = time.monotonic() + 0.2
    wall0 = time.time() + (mono0 - time.monotonic())
    give_up_at = mono0 + duration * 2 + 30  # a generator this late has long stopped measuring
    i = 0
    while i < n:
        now = time.monotonic()
        if now > give_up_at:
            load.error("not sent: generator too far behind")
            break
        scheduled = mono0 + i / rate
        if scheduled > now:
            time.sleep(min(scheduled - now, 0.05))
            continue
        while i < n and mono0 + i / rate <= now:  # every call that is due by now
            load.lateness[i] = time.monotonic() - (mono0 + i / rate)
            load.sent[i] = time.time()
            future = stubs[i % len(stubs)].CreatePaymentIntent.future(requests[i], timeout=30)
            future.add_done_callback(lambda f, i=i: on_done(i, f))
            requests[i] = None
            i += 1
    load.issued = i
    wait_until = time.monotonic() + 35  # the calls' own timeout is 30 s
    while load.done < load.issued and time.monotonic() < wait_until:
        time.sleep(0.05)
    if load.done < load.issued:
        with load.lock:
            load.errors["no answer"] = load.issued - load.done
    return load, wall0
