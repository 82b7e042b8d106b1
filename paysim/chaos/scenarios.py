"""The payment journeys ``paysim chaos`` drives, and where each must end.

Five are the PG scenarios as a client asks for them; three add calls after
the create, because they are what exercises the harder promises:

* ``cancel``: an APPROVE intent with a long delay, cancelled at once: its
  timer is cancelled, so nothing but CANCELLED may ever be announced;
* ``cancel_processing``: a TIMEOUT intent taken by ProcessPayment (PROCESSING,
  the PG never answers), then cancelled: its expiry timer is cancelled;
* ``refund``: processed at once (COMPLETED), a partial refund (still
  COMPLETED, ``refunded_amount`` 40,000), then the rest (REFUNDED): three
  changes of one payment in quick succession, which is what reordering and
  duplicates are about.

A ``cancel`` whose CancelPayment loses the race against its timer (the timer
fired first: FAILED_PRECONDITION) is not a violation; the driver records it
and the payment is expected to complete instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from paysim._proto.proto.payment.v1 import payment_pb2 as pb

COMPLETED = "PAYMENT_STATUS_COMPLETED"
FAILED = "PAYMENT_STATUS_FAILED"
CANCELLED = "PAYMENT_STATUS_CANCELLED"
EXPIRED = "PAYMENT_STATUS_EXPIRED"
REFUNDED = "PAYMENT_STATUS_REFUNDED"
PROCESSING = "PAYMENT_STATUS_PROCESSING"
PENDING = "PAYMENT_STATUS_PENDING"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, EXPIRED, REFUNDED})
# What a cancelled timer would have announced: none of these may follow a cancel.
TIMER_OUTCOMES = frozenset({COMPLETED, FAILED, EXPIRED})

# The server a run starts gets these (before time compression).
DEFAULT_DELAY_MS = 2_000
DELAY_SCENARIO_MS = 10_000
INTENT_TTL_MS = 600_000  # TIMEOUT payments expire after 6 s at the default scale of 0.01
MAX_DELAY_MS = 120_000
# A running paysim (--target) is assumed to have the defaults.
TARGET_INTENT_TTL_MS = 900_000

AMOUNT = 100_000  # KRW
PARTIAL_REFUND = 40_000
LONG_DELAY_MS = 60_000  # before time compression: far longer than the calls that follow


@dataclass(frozen=True)
class Scenario:
    name: str
    proto: int  # payment.v1.PaymentScenario
    expected: frozenset[str]  # acceptable final statuses
    steps: tuple[str, ...] = ()  # calls after the create: process, cancel, partial_refund, refund
    delay_ms: int | None = None  # metadata.tags["delay_ms"]
    cancels_timer: bool = False
    # Every change the journey makes, as (status, refunded so far); empty: just the outcome.
    path: tuple[tuple[str, int], ...] = ()
    race_lost: frozenset[str] = frozenset()  # final status when the cancel lost to the timer


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("approve", pb.PAYMENT_SCENARIO_APPROVE, frozenset({COMPLETED})),
        Scenario("fail", pb.PAYMENT_SCENARIO_FAIL, frozenset({FAILED})),
        Scenario("delay", pb.PAYMENT_SCENARIO_DELAY, frozenset({COMPLETED})),
        Scenario("random", pb.PAYMENT_SCENARIO_RANDOM, frozenset({COMPLETED, FAILED})),
        Scenario("timeout", pb.PAYMENT_SCENARIO_TIMEOUT, frozenset({EXPIRED})),
        Scenario(
            "cancel",
            pb.PAYMENT_SCENARIO_APPROVE,
            frozenset({CANCELLED}),
            steps=("cancel",),
            delay_ms=LONG_DELAY_MS,
            cancels_timer=True,
            path=((CANCELLED, 0),),
            race_lost=frozenset({COMPLETED}),
        ),
        Scenario(
            "cancel_processing",
            pb.PAYMENT_SCENARIO_TIMEOUT,
            frozenset({CANCELLED}),
            steps=("process", "cancel"),
            cancels_timer=True,
            path=((PROCESSING, 0), (CANCELLED, 0)),
            race_lost=frozenset({EXPIRED}),
        ),
        Scenario(
            "refund",
            pb.PAYMENT_SCENARIO_APPROVE,
            frozenset({REFUNDED}),
            steps=("process", "partial_refund", "refund"),
            delay_ms=LONG_DELAY_MS,
            path=((COMPLETED, 0), (COMPLETED, PARTIAL_REFUND), (REFUNDED, AMOUNT)),
        ),
    )
}

DEFAULT_MIX: dict[str, float] = {
    "approve": 30,
    "fail": 10,
    "delay": 10,
    "random": 25,
    "timeout": 5,
    "cancel": 8,
    "cancel_processing": 4,
    "refund": 8,
}
