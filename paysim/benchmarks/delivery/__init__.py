"""The whole delivery path under a constant arrival rate: creates, webhooks, events.

    python -m paysim.benchmarks.delivery [--rate 1000] [--duration 60] [--delay-ms 2000]
        [--events moto|sink] [--channels 4] [--webhook-concurrency N]
        [--drain-timeout 60] [--json FILE] [--profile-server FILE]
        [--count-instructions FILE]
    python -m paysim.benchmarks.delivery.instructions [--rate 20] [--short 10] [--long 40]

The second counts the server's instructions per payment under cachegrind
(see ``instructions``).

A benchmark, not a test: it reports what it reaches and exits 0. Everything
runs on loopback (127.0.0.1), in up to four processes:

* **the server**, ``python -m paysim serve`` pinned to core 0 (``taskset -c
  0``), as in production (ENVIRONMENT=production: JSON logs, one line per RPC,
  to /dev/null; metrics on) with WEBHOOK_ALLOWED_HOSTS=127.0.0.1 (production
  refuses loopback otherwise) and AWS_ENDPOINT_URL pointing at the events
  endpoint below;
* **moto's server** (``--events moto``, the default) as EventBridge and SQS
  (``python -m moto.server``), with the bus, rule, queue and DLQ made by
  ``paysim.adapters.aws.ensure_resources``; events are counted in the queue;
* **a webhook receiver** (``python -m paysim.benchmarks.delivery --receiver
  PORT OUTFILE``): a lean asyncio HTTP/1.1 server that answers 200 at once,
  records each delivery's arrival wall time, payment id, status and attempt,
  and checks every signature with ``paysim.webhooks.verify``; it writes its
  records to OUTFILE when told to stop (SIGTERM). With ``--events sink`` it
  also stands in for EventBridge: it accepts every PutEvents entry (checking
  source, detail-type and bus) and records its arrival, so events are
  counted per payment and their lag past due is measured too; moto is not
  started;
* **this process**, the load generator: CreatePaymentIntent (scenario
  APPROVE, a webhook_url to the receiver, a unique reservation id each) at a
  constant arrival rate for ``--duration`` seconds, open loop: request ``i``
  is sent at ``start + i / rate`` by the wall clock, whatever the answers do
  (grpcio futures on ``--channels`` connections). How late it sent is
  measured and reported ("send lateness"): if it fell behind, the rate was
  not offered.

Moto, the receiver and this process are pinned to core 1; the fake AWS
credentials ("bench") are set in this process and its children only.

**Moto is far slower than the server.** moto 5.2 spends about 7 ms of CPU per
event routed to SQS (it compiles the default input template's jsonpath
expressions anew for every event) plus a scan of the whole queue on every
SendMessage, so it absorbs well under 100 events/s, fewer as the queue grows.
So it runs niced (``nice -n 19``): it gets only what core 1 leaves idle and
cannot starve the generator and the receiver, but at hundreds of payments
per second events pile up in the server's buffer and most are not in SQS
when the drain times out (reported as such). Because the server then makes
far fewer PutEvents calls than it would against AWS, its CPU is understated
with moto; ``--events sink`` measures the server with every event published
at the rate it is produced.

**Lag past due.** An APPROVE payment completes ``--delay-ms`` after it was
created, which fires its one webhook and its one event. The server's
``created_at`` is recovered exactly from the answer: ``expires_at`` is
``created_at + INTENT_TTL_MS`` (set explicitly here), so ``due = expires_at -
INTENT_TTL + delay``. The lag of a delivery is its arrival time at the
receiver (after the whole request was read) minus ``due``: timer lateness,
queueing in the dispatcher, the HTTP request and the receiver's own delay
all count. Server and receiver read the same wall clock.

After the last create it waits (bounded by ``--drain-timeout`` past the last
due time) until every created payment's webhook has arrived and its event is
in SQS (or at the sink), then reports: creates/s, webhooks (received,
duplicates, missing, signature failures), lag p50/p90/p99/max, events
(published per the server's ``paysim_events_published_total``, in SQS or at
the sink), server CPU (``process_cpu_seconds_total``), CPU per process and
per core in the steady window (from ``/proc``; a warning when other work on
the host took more than 10 % of a core), a per-second timeline (in the
JSON), and every error. ``/metrics`` is scraped once a second during the run
(a few ms of server CPU each).

Linux only (``taskset``, ``nice``, ``/proc``); needs two cores, grpcio and
``moto[server]`` (the dev extra).

The modules, in the order a run uses them: ``cli`` (the command line),
``constants`` (cores, names, targets), ``processes`` (start, pin, stop),
``receiver`` (the webhook receiver and PutEvents stand-in, its own process),
``load`` (the open-loop generator), ``sampling`` (CPU and /metrics once a
second), ``harness`` (one run, end to end) and ``report`` (the numbers).
"""

from paysim.benchmarks.delivery.cli import main
from paysim.benchmarks.delivery.harness import Outcome, bench
from paysim.benchmarks.delivery.receiver import run_receiver
from paysim.benchmarks.delivery.report import Report

__all__ = ["Outcome", "Report", "bench", "main", "run_receiver"]
