"""ListPayments cost against the number of stored payments, and memory per payment.

    python -m paysim.benchmarks.lifecycle [--list] [--memory] [--json FILE]
        [--layouts 10000x100,100000x1000,1000000x10000,100000x100] [--calls 2000]
        [--pending 100000] [--churn 1000000] [--churn-minutes 10]

Without ``--list`` or ``--memory`` both parts run. A benchmark, not a test: it
reports what it measures and exits 0. Everything runs in process: a
``PaymentService`` with a ``MemoryStore``, a notifier that drops every change,
real ``Metrics``, and the ``Simulator`` in a trio nursery.

**Listing** (``--list``). For each layout ``PAYMENTSxUSERS`` the store is
filled directly with ``store.insert`` of cheaply built ``Payment`` objects
(PENDING, shared sub-objects, creation times 1 ms apart, users in turn), not
through the service: about 5 µs per payment instead of create_intent's 30 µs
(which also starts a timer task), and the per-user index ListPayments reads
is the same either way. The measured user owns PAYMENTS / USERS of them,
spread over the whole time range. Then ``--calls`` ListPayments calls
(``validate_list`` with its cursor decoding, then ``service.list_payments``;
page_size 20, no filter; GC thresholds as in ``paysim serve``) are timed one
by one with ``perf_counter_ns``, for the first page and for the page after
the first page's ``next_cursor``, after 200 unmeasured calls each. The
default layouts hold the measured user at 100 payments while the total grows
10k, 100k, 1M, and add one with 1,000 for the user at 100k: the cost follows
the user's own payments (``paginate`` filters and keys all of them), not
everyone's.

**Memory** (``--memory``), each case in a fresh child process, set up as
``paysim serve`` does (GC thresholds from ``Settings``, start-up objects
frozen). Resident memory is ``VmRSS`` from ``/proc/self/status`` after
``gc.collect()``, minus the same reading taken after setup, before the first
payment; peak is ``VmHWM`` minus that baseline.

* *pending*: ``--pending`` TIMEOUT payments (the PG never answers; each
  timer is due at the 15-minute INTENT_TTL) created through the edge's
  ``validate_create`` and ``service.create_intent`` on the real trio clock, so
  they all stay PENDING with their timer task started; every request has its
  own strings (reservation id, user id among 1,000, webhook URL, metadata), as
  decoded requests would. Printed: bytes per pending payment, what 1,000,000
  would take against the issue's 2 GiB goal, and the command.
* *cycle*: ``--churn`` TIMEOUT payments created as above, all cancelled
  (CancelPayment through the service, a checkpoint every 1,000 as between
  calls), then swept by ``service.sweep`` once a fake wall clock passes
  RETENTION 60 s. Absolute RSS idle (after setup), with all pending, and after
  the sweep, against the goal "within 20 % of idle".
* *churn*: ``--churn`` payments created through the service over
  ``--churn-minutes`` simulated minutes on a ``MockClock`` (autojump), in
  batches every 10 ms of simulated time, approved after DEFAULT_DELAY 2 s,
  with RETENTION 60 s and the service's own sweeper (``run_sweeper``, every
  simulated second). Stored payments and RSS are sampled every simulated
  second. Reported at the end of the creation window (+3 s for the last
  timers) and again 65 s later, when retention has dropped everything (with
  ``sys.getallocatedblocks()`` against its baseline: back near zero means
  nothing leaked, whatever RSS the allocator keeps); and the real time the
  run took.

Measured before issue 18 (Python 3.11, two shared Xeon cores, default arguments,
about 2 min; the pending case then used APPROVE with delay_ms 600000):

* ListPayments, first page / cursor page p50: 29-31 / 32-35 µs with 100 of
  the user's own among 10k, 100k and 1M payments (p99 60-70 µs); 280 / 285 µs
  with 1,000 of the user's own among 100k. Flat in everyone else's
  payments, linear in the user's own.
* 100,000 pending payments: 469 MiB (4.9 KB each, the timer task included;
  peak 608 MiB); create_intent 29-31 µs per call.
* 1,000,000 payments over 10 simulated minutes with retention 60 s: about
  100,000 stored at a time (105,000 at most), 211 MiB (2.2 KB per stored
  settled payment), peak 211 MiB, 110 s of real time. Once retention has
  dropped everything: 0 stored and allocated blocks back at the baseline
  (+2.4k), while RSS stays at 189 MiB (the allocator keeps its arenas for
  reuse; nothing leaked).

Issue 18 (``--memory --cases pending,cycle --pending 1000000 --churn 1000000``,
shared machine, load ~5): 1,000,000 TIMEOUT payments pending took 4,771 B each
before (4.44 GiB) and 3,581 B after (3.34 GiB; the trio timer alone is ~2.4 KB:
a sleeping task 1.4 KB plus its CancelScope 1.0 KB); after cancelling and
sweeping them, RSS is 195 MiB against 44 MiB idle (292 MiB before): the 2 GiB
and +20 % goals are not met yet.

Linux only (``/proc/self/status``).

The modules: ``cli`` (the command line and the tables), ``inprocess`` (the
service under measurement, resident memory), ``listing`` (``--list``) and
``memory`` (``--memory``, the child processes).
"""

from paysim.benchmarks.lifecycle.cli import main
from paysim.benchmarks.lifecycle.inprocess import DropNotifier
from paysim.benchmarks.lifecycle.listing import ListingResult, run_listing
from paysim.benchmarks.lifecycle.memory import MemoryResult, memory_churn, memory_pending

__all__ = [
    "DropNotifier",
    "ListingResult",
    "MemoryResult",
    "main",
    "memory_churn",
    "memory_pending",
    "run_listing",
]
