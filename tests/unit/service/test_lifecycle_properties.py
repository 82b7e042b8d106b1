"""The payment lifecycle under random operation sequences: a model-checked property test.

Each example is a list of operations run against a fresh ``PaymentService``
(``MemoryStore``, ``RecordingNotifier``, a ``Simulator`` in the example's own
nursery) inside its own ``trio.run`` on a ``MockClock`` with autojump. The
store never awaits, so every operation is atomic; time passes only in a
``Step``, which sleeps on the mock clock and lets every timer and scheduled
simulation due by then run. The wall clock the service stamps payments with is
the trio clock shifted to a realistic epoch, as in ``test_service``.

Operations: create (three users, every scenario, a ``delay_ms`` tag valid or
not, a ``test_outcome`` tag now and then, an idempotency key from a pool of
two), replay an earlier create, process (a test card, an unknown card, or
none; methods that may not match), cancel or refund (everything, half, one,
more than is left, nothing, another currency; keys from a pool of two), retry
an earlier keyed cancel, simulate a webhook (every target, delays valid or
not, forced or not), let time pass (up to past retention and the idempotency
TTL), sweep, and list.

Each operation is checked against a small model of what it must do (which
domain error, or which change); a domain error (``PaysimError``) is expected
only where the model expects that one, and must change nothing. Any other
exception fails the example, also one raised by a timer or a scheduled
simulation (the simulator only logs those, so ``CheckedSimulator`` records
them). After every operation ``World.check`` verifies the invariants:

* every announced change (``RecordingNotifier.changes``) follows the previous
  state of its payment: the next version, a legal transition from
  ``state.TRANSITIONS`` (or a refund while COMPLETED), ``previous`` and the
  refund list in step; a resend carries the current state unchanged;
  creation (version 1) is not announced, and nothing is announced for a
  payment after retention dropped it;
* every stored payment equals the last state announced for it (no silent
  change), its status is reachable from the one seen at the last check, and
  a payment leaves the store only in a sweep, settled, RETENTION after its
  last change; that sweep drops exactly those, and leaves no timer or
  scheduled simulation behind for them;
* refunds: 0 <= refunded <= amount, refunded is the sum of the refunds (all
  in the payment's currency), REFUNDED iff everything was refunded, and no
  refund unless the payment was captured;
* a timer is pending exactly for the PENDING and PROCESSING payments, and
  none of those is overdue, or past its ``expires_at``, once time has passed;
* ListPayments, for every user with a random page size and status filter:
  the cursor walk forwards, the walk back with ``previous_cursor`` and the
  page numbers all give exactly that user's stored payments, each once,
  newest first by (created_at, id), with ``total_count`` equal to their
  number;
* idempotency: a create or cancel retried with its key (within the TTL)
  returns the first answer and changes nothing (refunded included); the same
  key with other parameters is a conflict.

The settings are small so that the interesting times come up: DEFAULT_DELAY
2 s, INTENT_TTL 90 s, MAX_DELAY 60 s, RETENTION 30 s (shorter than the
longest scheduled simulation, so sweeps drop payments with work still
scheduled), idempotency TTL 120 s. ``pytest --hypothesis-show-statistics``
lists how often each outcome came up.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio
import trio.testing
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from paysim.adapters.memory_store import MemoryStore
from paysim.adapters.recording_notifier import RecordingNotifier
from paysim.config import SimulationSettings
from paysim.domain import forced_outcomes, state
from paysim.domain.models import (
    CancelCommand,
    CancelResult,
    CreateIntent,
    Metadata,
    Money,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Scenario,
)
from paysim.domain.state import MAX_REFUNDS
from paysim.domain.validation import (
    CreateRequest,
    check_simulate_delay,
    validate_cancel,
    validate_create,
    validate_list,
)
from paysim.errors import (
    FailedPrecondition,
    IdempotencyConflict,
    IllegalTransition,
    InvalidArgument,
    NotFound,
    Overloaded,
    PaysimError,
)
from paysim.observability.metrics import Metrics
from paysim.service import PaymentService, ServiceParts
from paysim.simulator import MAX_EXTRAS, Fire, Simulator

T = TypeVar("T")
S = PaymentStatus
EPOCH = 1_700_000_000.0
SETTINGS = SimulationSettings(
    default_delay_s=2.0,
    delay_scenario_s=10.0,
    intent_ttl_s=90.0,
    retention_s=30.0,  # shorter than the longest simulate delay: drops with work pending
    idempotency_ttl_s=120.0,
    max_delay_s=60.0,  # below intent_ttl_s, as Settings.from_env requires
    random_approve_rate=0.5,
)
LIVE = frozenset({S.PENDING, S.PROCESSING})
CAPTURED = frozenset({S.COMPLETED, S.REFUNDED})
USERS = ("alice", "bob", "carol")
UNKNOWN_ID = "pay_000000000000000000000000"
BAD_DELAYS = frozenset({"60001", "x1"})  # over max_delay_s; not a number
OTHER_CURRENCY = {"KRW": "USD", "USD": "KRW"}


def wall_clock() -> float:
    return EPOCH + trio.current_time()


def _reachable() -> dict[PaymentStatus, frozenset[PaymentStatus]]:
    """Each status's reflexive-transitive closure under ``state.TRANSITIONS``."""
    out: dict[PaymentStatus, frozenset[PaymentStatus]] = {}
    for start in PaymentStatus:
        seen, todo = {start}, [start]
        while todo:
            for nxt in state.TRANSITIONS.get(todo.pop(), frozenset()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        out[start] = frozenset(seen)
    return out


REACHABLE = _reachable()


# -- operations ---------------------------------------------------------------------
# ``target`` picks a stored payment (modulo their number); -1 an unknown id, -2 a dropped one.


@dataclass(frozen=True)
class Create:
    user: str
    scenario: Scenario
    amount: int
    currency: str
    method: PaymentMethod
    reservation: str
    webhook: bool
    delay_ms: str | None
    test_outcome: str | None
    key: str


@dataclass(frozen=True)
class ReplayCreate:
    index: int  # of an earlier create command, sent again unchanged


@dataclass(frozen=True)
class Process:
    target: int
    method: PaymentMethod
    card: str  # "": no card


@dataclass(frozen=True)
class Cancel:
    target: int
    captured: bool  # pick among COMPLETED payments, if there are any: a refund
    refund: str  # see World.refund_amount
    key: str
    reason: str


@dataclass(frozen=True)
class RetryCancel:
    index: int  # of an earlier keyed cancel command, sent again unchanged


@dataclass(frozen=True)
class Simulate:
    target: int
    status: PaymentStatus
    delay_seconds: int
    force: bool


@dataclass(frozen=True)
class Step:
    seconds: float


@dataclass(frozen=True)
class Sweep:
    pass


@dataclass(frozen=True)
class ListPages:
    user: str
    status: PaymentStatus
    reservation: str
    page_size: int


Op = Create | ReplayCreate | Process | Cancel | RetryCancel | Simulate | Step | Sweep | ListPages

targets = st.integers(-2, 12)
creates = st.builds(
    Create,
    user=st.sampled_from(USERS),
    scenario=st.sampled_from(list(Scenario)),
    amount=st.sampled_from([1000, 7, 2, 1]),
    currency=st.sampled_from(["KRW", "USD"]),
    method=st.sampled_from(
        [PaymentMethod.UNSPECIFIED, PaymentMethod.CREDIT_CARD, PaymentMethod.BANK_TRANSFER]
    ),
    reservation=st.sampled_from(["r1", "r2"]),
    webhook=st.booleans(),
    delay_ms=st.sampled_from(
        [None, None, None, "0", "500", "2000", "15000", "60000", *sorted(BAD_DELAYS)]
    ),
    test_outcome=st.sampled_from([None] * 8 + [*forced_outcomes.OUTCOMES, "bogus"]),
    key=st.sampled_from(["", "", "k1", "k2"]),
)
processes = st.builds(
    Process,
    target=targets,
    method=st.sampled_from(
        [PaymentMethod.UNSPECIFIED, PaymentMethod.CREDIT_CARD, PaymentMethod.DEBIT_CARD]
    ),
    card=st.sampled_from(["", "", "4111111111111111", *forced_outcomes.CARDS]),
)
cancels = st.builds(
    Cancel,
    target=targets,
    captured=st.booleans(),
    refund=st.sampled_from(["none", "none", "all", "half", "one", "excess", "zero", "currency"]),
    key=st.sampled_from(["", "c1", "c2"]),
    reason=st.sampled_from(["", "changed mind"]),
)
simulates = st.builds(
    Simulate,
    target=targets,
    status=st.sampled_from(list(PaymentStatus)),
    delay_seconds=st.sampled_from([0, 0, 1, 5, 45, 60, -1, 61]),
    force=st.booleans(),
)
steps = st.builds(Step, seconds=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 10.0, 31.0, 61.0, 125.0]))
listings = st.builds(
    ListPages,
    user=st.sampled_from([*USERS, "nobody"]),
    status=st.sampled_from(list(PaymentStatus)),
    reservation=st.sampled_from(["", "", "r1"]),
    page_size=st.integers(1, 7),
)
any_operation: st.SearchStrategy[Op] = st.one_of(
    st.just(Sweep()),  # first: what a shrunk example is padded with (min_size below)
    st.just(Sweep()),
    creates,
    creates,
    st.builds(ReplayCreate, index=st.integers(0, 20)),
    processes,
    processes,
    cancels,
    cancels,
    cancels,
    st.builds(RetryCancel, index=st.integers(0, 20)),
    simulates,
    simulates,
    steps,
    steps,
    steps,
    listings,
)
# A few payments first, so that the other operations have something to work on.
operations = st.builds(
    lambda first, rest: [*first, *rest],
    st.lists(creates, min_size=1, max_size=6),
    st.lists(any_operation, min_size=20, max_size=100),
)


# -- the system under test ------------------------------------------------------------


class CheckedSimulator(Simulator):
    """A ``Simulator`` that also records what a timer or scheduled simulation raised.

    The real one logs such an exception and carries on; here it fails the example.
    """

    def __init__(self, nursery: trio.Nursery, max_pending: int) -> None:
        super().__init__(nursery, max_pending)
        self.errors: list[Exception] = []

    def arm(self, payment_id: str, delay_s: float, fire: Fire) -> None:
        async def checked(pid: str) -> None:
            try:
                await fire(pid)
            except Exception as exc:
                self.errors.append(exc)
                raise

        super().arm(payment_id, delay_s, checked)

    def schedule_extra(
        self, payment_id: str, delay_s: float, work: Callable[[], Awaitable[object]]
    ) -> None:
        async def checked() -> object:
            try:
                return await work()
            except Exception as exc:
                self.errors.append(exc)
                raise

        super().schedule_extra(payment_id, delay_s, checked)


async def attempt(call: Callable[[], Awaitable[T]]) -> tuple[T | None, PaysimError | None]:
    """The call's result, or the domain error it raised; anything else propagates."""
    try:
        return await call(), None
    except PaysimError as exc:
        return None, exc


def expect_error(error: PaysimError | None, expected: type[PaysimError] | None) -> None:
    if expected is None:
        assert error is None, f"unexpected {error!r}"
    else:
        assert isinstance(error, expected), f"expected {expected.__name__}, got {error!r}"


@dataclass(frozen=True)
class CreateKey:
    cmd: CreateIntent
    payment_intent_id: str
    claimed_at: float


@dataclass(frozen=True)
class CancelKey:
    cmd: CancelCommand
    result: CancelResult
    claimed_at: float


class World:
    """The service under test and the model it is checked against."""

    def __init__(self, nursery: trio.Nursery, seed: int, rnd: random.Random) -> None:
        self.store = MemoryStore(retention_s=SETTINGS.retention_s)
        self.simulator = CheckedSimulator(nursery, SETTINGS.max_pending_payments)
        self.notifier = RecordingNotifier()
        self.service = PaymentService(
            ServiceParts(
                store=self.store,
                simulator=self.simulator,
                notifier=self.notifier,
                metrics=Metrics(),
            ),
            SETTINGS,
            rng=random.Random(seed),
            wall_clock=wall_clock,
        )
        self.rnd = rnd
        self.pids: list[str] = []  # every payment created, in order
        self.owner: dict[str, str] = {}
        self.last: dict[str, Payment] = {}  # the state last announced (or created)
        self.seen: dict[str, PaymentStatus] = {}  # the status at the last check
        self.dropped: set[str] = set()
        self.announced = 0  # how many of notifier.changes were checked
        self.creates: list[CreateIntent] = []
        self.create_keys: dict[tuple[str, str], CreateKey] = {}
        self.cancels: list[CancelCommand] = []
        self.cancel_keys: dict[tuple[str, str], CancelKey] = {}

    # -- helpers --------------------------------------------------------------------
    def target(self, index: int) -> str:
        """A stored payment for ``index`` >= 0; -1 an unknown id, -2 a dropped payment."""
        live = self.live()
        if index >= 0 and live:
            return live[index % len(live)]
        if index == -2 and self.dropped:
            return next(pid for pid in self.pids if pid in self.dropped)
        return UNKNOWN_ID

    def live(self) -> list[str]:
        return [pid for pid in self.pids if pid not in self.dropped]

    async def snapshot(self) -> dict[str, Payment | None]:
        return {pid: await self.store.get(pid) for pid in self.pids}

    # -- operations -----------------------------------------------------------------
    async def apply(self, op: Op) -> None:
        before = await self.snapshot()
        stored, announced = len(self.store), len(self.notifier.changes)
        error: PaysimError | None = None
        outcome = "ok"
        match op:
            case Create():
                error = await self.create_op(op)
            case ReplayCreate():
                if self.creates:
                    error = await self.create(self.creates[op.index % len(self.creates)])
                else:
                    outcome = "skipped"
            case Process():
                error = await self.process(op)
            case Cancel():
                error = await self.cancel(op)
            case RetryCancel():
                # Preferably one that succeeded: its retry must get the same answer.
                keyed = [e.cmd for e in self.cancel_keys.values()] or [
                    c for c in self.cancels if c.idempotency_key
                ]
                if keyed:
                    error = await self.run_cancel(keyed[op.index % len(keyed)])
                else:
                    outcome = "skipped"
            case Simulate():
                error = await self.simulate(op)
            case Step():
                await trio.sleep(op.seconds)
                if op.seconds > 0:
                    await self.check_nothing_overdue()
            case Sweep():
                await self.sweep()
            case ListPages():
                await self.check_listing(op.user, op.status, op.reservation, op.page_size)
        event(f"{type(op).__name__}: {type(error).__name__ if error else outcome}")
        if error is not None:  # a refused request changes nothing
            assert await self.snapshot() == before
            assert len(self.store) == stored
            assert len(self.notifier.changes) == announced

    @staticmethod
    def command(op: Create) -> CreateIntent:
        tags: dict[str, str] = {}
        if op.delay_ms is not None:
            tags["delay_ms"] = op.delay_ms
        if op.test_outcome is not None:
            tags[forced_outcomes.TAG] = op.test_outcome
        request = CreateRequest(
            reservation_id=op.reservation,
            user_id=op.user,
            amount=op.amount,
            currency=op.currency,
            amount_present=True,
            method=op.method,
            scenario=op.scenario,
            webhook_url="https://example.com/hook" if op.webhook else "",
            idempotency_key=op.key,
            metadata=Metadata(source="prop", tags=tags),
        )
        return validate_create(request, max_delay_s=SETTINGS.max_delay_s)

    async def create_op(self, op: Create) -> PaysimError | None:
        """Parse (as the edge does, refusing bad tags before the service), then create."""
        expected: type[PaysimError] | None = None
        if op.delay_ms in BAD_DELAYS or (op.test_outcome or "approve") not in (
            forced_outcomes.OUTCOMES
        ):
            expected = InvalidArgument
        try:
            cmd = self.command(op)
        except InvalidArgument as exc:
            expect_error(exc, expected)
            return exc
        expect_error(None, expected)
        return await self.create(cmd)

    async def create(self, cmd: CreateIntent) -> PaysimError | None:
        self.creates.append(cmd)
        now = wall_clock()
        key = cmd.idempotency_key
        entry = self.create_keys.get((cmd.user_id, key)) if key else None
        if entry is not None and now >= entry.claimed_at + SETTINGS.idempotency_ttl_s:
            entry = None  # expired
        expected: type[PaysimError] | None = None
        if entry is not None and entry.cmd != cmd:
            expected = IdempotencyConflict
        elif entry is not None and entry.payment_intent_id in self.dropped:
            expected = NotFound  # the original is gone
        created, error = await attempt(lambda: self.service.create_intent(cmd))
        expect_error(error, expected)
        if created is None:
            return error
        payment = created.payment
        assert payment == await self.store.get(payment.payment_intent_id)
        if entry is not None:
            event("create replayed with its key")
            assert created.replayed
            assert payment.payment_intent_id == entry.payment_intent_id
            return None
        assert not created.replayed
        pid = payment.payment_intent_id
        assert pid not in self.owner
        assert payment.status is S.PENDING
        assert payment.version == 1
        assert payment.created_at == payment.updated_at == now
        assert payment.expires_at == now + SETTINGS.intent_ttl_s
        assert (payment.user_id, payment.amount, payment.reservation_id) == (
            cmd.user_id,
            cmd.amount,
            cmd.reservation_id,
        )
        assert (payment.method, payment.webhook_url) == (cmd.method, cmd.webhook_url)
        assert payment.refunded == 0
        assert payment.result is None
        self.check_decided_outcome(cmd, payment)
        assert self.simulator.is_scheduled(pid)
        self.pids.append(pid)
        self.owner[pid] = cmd.user_id
        self.last[pid] = payment
        self.seen[pid] = payment.status
        if key:
            self.create_keys[(cmd.user_id, key)] = CreateKey(cmd, pid, now)
        return None

    @staticmethod
    def check_decided_outcome(cmd: CreateIntent, payment: Payment) -> None:
        scenario = cmd.scenario
        if scenario is Scenario.UNSPECIFIED:
            scenario = Scenario.from_name(SETTINGS.default_scenario)
        assert payment.scenario is scenario
        tags = cmd.metadata.tags
        statuses = {
            Scenario.APPROVE: {S.COMPLETED},
            Scenario.DELAY: {S.COMPLETED},
            Scenario.FAIL: {S.FAILED},
            Scenario.RANDOM: {S.COMPLETED, S.FAILED},
            Scenario.TIMEOUT: {S.EXPIRED},
        }[scenario]
        delay = (
            SETTINGS.delay_scenario_s if scenario is Scenario.DELAY else SETTINGS.default_delay_s
        )
        if "delay_ms" in tags:
            delay = int(tags["delay_ms"]) / 1000
        if scenario is Scenario.TIMEOUT:
            delay = SETTINGS.intent_ttl_s
        name = tags.get(forced_outcomes.TAG)
        if name is not None:
            forced = forced_outcomes.OUTCOMES[name]
            statuses = {forced.status}
            if forced.status is S.EXPIRED:
                delay = SETTINGS.intent_ttl_s
            assert payment.outcome.response_code == forced.response_code
        assert payment.outcome.status in statuses
        assert payment.outcome.delay_s == delay

    async def process(self, op: Process) -> PaysimError | None:
        pid = self.target(op.target)
        before = await self.store.get(pid)
        forced = forced_outcomes.for_card(op.card) if op.card else None
        now = wall_clock()
        expected: type[PaysimError] | None = None
        if before is None:
            expected = NotFound
        elif (
            before.status is S.PENDING
            and PaymentMethod.UNSPECIFIED not in (op.method, before.method)
            and op.method is not before.method
        ):
            expected = InvalidArgument
        result, error = await attempt(lambda: self.service.process_payment(pid, op.method, forced))
        expect_error(error, expected)
        if result is None:
            return error
        assert before is not None
        after = await self.store.get(pid)
        assert after is not None
        assert result == after
        if before.status is not S.PENDING:
            assert after == before  # nothing is decided twice
            return None
        method = before.method if op.method is PaymentMethod.UNSPECIFIED else op.method
        assert after.method is method
        status = forced_outcomes.OUTCOMES[forced].status if forced else before.outcome.status
        if status is S.EXPIRED:  # the PG took the card and never answers
            assert after.status is S.PROCESSING
            assert after.result is None
            assert self.simulator.is_scheduled(pid)
            assert after.created_at + after.outcome.delay_s == after.expires_at
        else:
            assert after.status is status
            assert after.result is not None
            assert after.result.processed_at == now
            assert after.result.success == (status is S.COMPLETED)
            assert after.processed_at == now
            assert after.payment_id
            assert not self.simulator.is_scheduled(pid)
        return None

    def refund_amount(self, kind: str, payment: Payment | None) -> Money | None:
        """The refund_amount a Cancel of ``kind`` asks for, given the payment now."""
        if kind == "none":
            return None
        currency = payment.amount.currency if payment is not None else "KRW"
        left = payment.refundable if payment is not None else 1
        amount = {
            "all": left,
            "half": max(1, left // 2),
            "one": 1,
            "excess": left + 1,
            "zero": 0,
            "currency": 1,
        }[kind]
        if kind == "currency":
            currency = OTHER_CURRENCY[currency]
        return Money(amount, currency)

    async def cancel(self, op: Cancel) -> PaysimError | None:
        pid = self.target(op.target)
        if op.captured and op.target >= 0:
            completed = [p.payment_intent_id for p in self.last.values() if p.status is S.COMPLETED]
            completed = [pid for pid in completed if pid not in self.dropped]
            if completed:
                pid = completed[op.target % len(completed)]
        money = self.refund_amount(op.refund, await self.store.get(pid))
        try:
            cmd = validate_cancel(
                payment_intent_id=pid,
                reason=op.reason,
                refund_present=money is not None,
                refund_amount=money.amount if money is not None else 0,
                refund_currency=money.currency if money is not None else "",
                idempotency_key=op.key,
            )
        except InvalidArgument as exc:
            assert money is not None
            assert money.amount <= 0
            return exc
        self.cancels.append(cmd)
        return await self.run_cancel(cmd)

    async def run_cancel(self, cmd: CancelCommand) -> PaysimError | None:
        pid, key = cmd.payment_intent_id, cmd.idempotency_key
        before = await self.store.get(pid)
        now = wall_clock()
        entry = self.cancel_keys.get((pid, key)) if key else None
        if entry is not None and now >= entry.claimed_at + SETTINGS.idempotency_ttl_s:
            entry = None  # expired
        expected: type[PaysimError] | None = None
        if before is None:
            expected = NotFound
        elif entry is not None:
            expected = None if entry.cmd == cmd else IdempotencyConflict
        elif before.status in LIVE:
            expected = FailedPrecondition if cmd.refund_amount is not None else None
        elif before.status is S.COMPLETED:
            asked = cmd.refund_amount
            if asked is not None and (
                asked.currency != before.amount.currency or asked.amount > before.refundable
            ):
                expected = InvalidArgument
            elif len(before.refunds) >= MAX_REFUNDS:
                expected = FailedPrecondition
        else:
            expected = FailedPrecondition
        result, error = await attempt(lambda: self.service.cancel_payment(cmd))
        expect_error(error, expected)
        if result is None:
            return error
        assert before is not None
        after = await self.store.get(pid)
        assert after is not None
        if entry is not None:
            # The retry: the first answer again, and nothing changes (refunded included).
            event(f"cancel replayed with its key: {result.status.name}")
            assert result == entry.result
            assert after == before
            return None
        if before.status in LIVE:
            assert result == CancelResult(S.CANCELLED, now, None, "")
            assert after.status is S.CANCELLED
            assert after.cancelled_at == now
            assert after.cancellation_reason == cmd.reason
            assert not self.simulator.is_scheduled(pid)
            assert self.simulator.scheduled_extras(pid) == 0
        else:
            asked_amount = (
                cmd.refund_amount.amount if cmd.refund_amount is not None else before.refundable
            )
            assert after.refunded == before.refunded + asked_amount
            full = after.refunded == after.amount.amount
            assert after.status is (S.REFUNDED if full else S.COMPLETED)
            assert result == CancelResult(
                after.status, now, Money(after.refunded, after.amount.currency),
                after.refunds[-1].refund_id,
            )  # fmt: skip
            assert len(after.refunds) == len(before.refunds) + 1
            event(f"refund: {'full' if full else 'partial'}")
        if key:
            self.cancel_keys[(pid, key)] = CancelKey(cmd, result, now)
        return None

    async def simulate(self, op: Simulate) -> PaysimError | None:
        try:
            delay_s = check_simulate_delay(op.delay_seconds, SETTINGS.max_delay_s)
        except InvalidArgument as exc:
            assert not 0 <= op.delay_seconds <= SETTINGS.max_delay_s
            return exc
        pid = self.target(op.target)
        before = await self.store.get(pid)
        now = wall_clock()
        later = delay_s > 0 and not op.force
        resend = before is not None and op.status in (S.UNSPECIFIED, before.status)
        expected: type[PaysimError] | None = None
        if before is None:
            expected = NotFound
        elif not resend and op.status not in state.TRANSITIONS[before.status]:
            expected = IllegalTransition
        elif later and self.simulator.scheduled_extras(pid) >= MAX_EXTRAS:
            expected = Overloaded
        announced = len(self.notifier.changes)
        done, error = await attempt(
            lambda: self.service.simulate_webhook(pid, op.status, delay_s, op.force)
        )
        expect_error(error, expected)
        if done is None:
            return error
        assert before is not None
        after = await self.store.get(pid)
        assert after is not None
        new = self.notifier.changes[announced:]
        if later:
            assert not done.webhook_sent
            assert done.scheduled_at == now + delay_s
            assert after == before
            assert not new
            return None
        assert done.scheduled_at == now
        assert done.webhook_sent == bool(before.webhook_url)
        assert [c.event_id for c in new] == [done.webhook_id]
        if resend:
            assert new[0].resend
            assert new[0].payment == before == after
            return None
        assert not new[0].resend
        assert new[0].payment == after
        assert after.status is op.status
        assert self.simulator.is_scheduled(pid) == (after.status is S.PROCESSING)
        if after.status is S.REFUNDED:
            assert after.refunded == after.amount.amount
        return None

    async def sweep(self) -> None:
        now = wall_clock()
        due: set[str] = set()
        for pid in self.live():
            p = await self.store.get(pid)
            assert p is not None
            if p.status not in LIVE and p.updated_at + SETTINGS.retention_s <= now:
                due.add(pid)
        if any(self.simulator.scheduled_extras(pid) for pid in due):
            event("sweep dropped a payment with a scheduled simulation")
        assert await self.service.sweep() == len(due)
        if due:
            event("sweep dropped payments")
        for pid in self.live():
            gone = await self.store.get(pid) is None
            assert gone == (pid in due), f"{pid}: dropped {gone}, due {pid in due}"
            if gone:
                self.dropped.add(pid)
                assert not self.simulator.is_scheduled(pid)
                assert self.simulator.scheduled_extras(pid) == 0

    async def check_nothing_overdue(self) -> None:
        """After time passed: every PENDING or PROCESSING payment's answer is still to come.

        A timer due exactly now may not have run yet (it is as ready as this task).
        """
        now = wall_clock()
        for pid in self.live():
            p = await self.store.get(pid)
            assert p is not None
            if p.status in LIVE:
                assert p.created_at + p.outcome.delay_s >= now, f"{pid} {p.status.name} overdue"
                assert p.expires_at >= now, f"{pid} {p.status.name} past its expiry"

    # -- invariants -----------------------------------------------------------------
    async def check(self) -> None:
        assert not self.simulator.errors, self.simulator.errors
        self.check_announcements()
        live = 0
        for pid in self.pids:
            p = await self.store.get(pid)
            if pid in self.dropped:
                assert p is None, f"{pid} came back"
                assert not self.simulator.is_scheduled(pid)
                assert self.simulator.scheduled_extras(pid) == 0
                continue
            assert p is not None, f"{pid} left the store outside a sweep"
            assert p == self.last[pid], f"{pid} changed silently"
            assert p.status in REACHABLE[self.seen[pid]], (self.seen[pid], p.status)
            self.seen[pid] = p.status
            check_payment(p, wall_clock())
            assert self.simulator.is_scheduled(pid) == (p.status in LIVE), (pid, p.status)
            assert self.simulator.scheduled_extras(pid) <= MAX_EXTRAS
            live += p.status in LIVE
        assert len(self.store) == len(self.live())
        assert self.simulator.pending == live
        for user in USERS:
            size = self.rnd.randint(1, 7)
            await self.check_listing(user, S.UNSPECIFIED, "", size)
            await self.check_listing(user, self.rnd.choice(list(PaymentStatus)), "", size)

    def check_announcements(self) -> None:
        changes = self.notifier.changes
        for change in changes[self.announced :]:
            p = change.payment
            pid = p.payment_intent_id
            assert pid in self.last, f"announced {pid}, never created"
            assert pid not in self.dropped, f"announced {pid} after it was dropped"
            prev = self.last[pid]
            assert change.previous is prev.status
            if change.resend:
                assert p == prev
                assert change.refund is None
                continue
            assert p.version == prev.version + 1, (prev.version, p.version)
            if p.status is prev.status:
                assert p.status is S.COMPLETED
                assert change.refund is not None
            else:
                assert p.status in state.TRANSITIONS[prev.status], (prev.status, p.status)
            assert change.at == p.updated_at >= prev.updated_at
            assert same_identity(p, prev)
            if change.refund is not None:
                assert p.refunds == (*prev.refunds, change.refund)
                assert p.refunded == prev.refunded + change.refund.amount.amount
            else:
                assert (p.refunds, p.refunded) == (prev.refunds, prev.refunded)
            self.last[pid] = p
        self.announced = len(changes)

    async def check_listing(
        self, user: str, status: PaymentStatus, reservation: str, size: int
    ) -> None:
        """Every way through the user's pages gives exactly the expected payments."""
        expected: list[Payment] = []
        for pid in self.live():
            p = await self.store.get(pid)
            assert p is not None
            if (
                self.owner[pid] == user
                and status in (S.UNSPECIFIED, p.status)
                and reservation in ("", p.reservation_id)
            ):
                expected.append(p)
        expected.sort(key=lambda p: (p.created_at, p.payment_intent_id), reverse=True)
        total = len(expected)
        pages = max(1, math.ceil(total / size))
        cursors = ["", ""]  # the last page's next and previous cursors

        async def page(cursor: str = "", number: int = 0) -> list[Payment]:
            query = validate_list(
                user_id=user,
                status=status,
                reservation_id=reservation,
                page=number,
                page_size=size,
                cursor=cursor,
            )
            got = await self.service.list_payments(query)
            assert got.total_count == total
            assert bool(got.next_cursor) == (got.has_next_page and bool(got.payments))
            assert bool(got.previous_cursor) == (got.has_previous_page and bool(got.payments))
            cursors[:] = [got.next_cursor, got.previous_cursor]
            return got.payments

        # Forwards with next_cursor.
        walked = await page()
        assert cursors[1] == ""  # the first page has nothing newer
        for _ in range(pages - 1):
            assert cursors[0], "a page is missing"
            walked += await page(cursors[0])
        assert cursors[0] == "", "more pages than payments"
        assert walked == expected
        if pages > 2:
            event("listing: more than two pages")
        # Backwards from the last page with previous_cursor.
        backwards = expected[(pages - 1) * size :]
        while cursors[1]:
            backwards = [*await page(cursors[1]), *backwards]
            assert len(backwards) <= total
        assert backwards == expected
        # By page number, one past the end included.
        for number in range(1, pages + 2):
            chunk = expected[(number - 1) * size : number * size]
            assert await page(number=number) == chunk


def same_identity(a: Payment, b: Payment) -> bool:
    """Equal in everything a payment never changes after creation."""
    return (
        a.payment_intent_id,
        a.reservation_id,
        a.user_id,
        a.amount,
        a.scenario,
        a.webhook_url,
        a.metadata,
        a.client_secret,
        a.created_at,
        a.expires_at,
    ) == (
        b.payment_intent_id,
        b.reservation_id,
        b.user_id,
        b.amount,
        b.scenario,
        b.webhook_url,
        b.metadata,
        b.client_secret,
        b.created_at,
        b.expires_at,
    )


def check_payment(p: Payment, now: float) -> None:
    """What holds for one stored payment on its own: refunds, result, times."""
    assert 0 <= p.refunded <= p.amount.amount
    assert p.refunded == sum(r.amount.amount for r in p.refunds)
    assert all(r.amount.currency == p.amount.currency and r.amount.amount > 0 for r in p.refunds)
    if p.status in CAPTURED:
        assert (p.status is S.REFUNDED) == (p.refunded == p.amount.amount)
        assert p.result is not None
        assert p.result.success
        assert p.payment_id
    else:
        assert p.refunded == 0
        assert not p.refunds
    if p.status in LIVE:
        assert p.result is None
        assert not p.payment_id
    if p.status is S.FAILED:
        assert p.result is not None
        assert not p.result.success
        assert p.payment_id
    if p.status is S.EXPIRED:
        assert p.result is not None
        assert not p.result.success
    if p.status in (S.CANCELLED, S.REFUNDED):
        assert p.cancelled_at is not None
    assert p.created_at <= p.updated_at <= now


# -- the test -----------------------------------------------------------------------


async def run_scenario(ops: list[Op], seed: int, rnd: random.Random) -> None:
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        world = World(nursery, seed, rnd)
        try:
            await world.check()
            for i, op in enumerate(ops):
                note(f"{i}: t={trio.current_time()} {op!r}")
                await world.apply(op)
                await world.check()
        except Exception as exc:  # raised below, outside the nursery: no exception group
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


LIFECYCLE = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,  # nothing written into the repository
)


@LIFECYCLE
@given(ops=operations, seed=st.integers(0, 3), rnd=st.randoms(use_true_random=False))
def test_lifecycle_invariants_hold(ops: list[Op], seed: int, rnd: random.Random) -> None:
    trio.run(run_scenario, ops, seed, rnd, clock=trio.testing.MockClock(autojump_threshold=0))
