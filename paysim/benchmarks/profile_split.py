"""Split a py-spy profile of the server into the whole path's costs per payment.

    py-spy record -p PID -d 10 -r 250 -f raw -o FILE --gil
    python -m paysim.benchmarks.profile_split FILE --us-per-payment US

How the README's "Where the whole path's CPU goes" table is made: run
``python -m paysim.benchmarks.delivery --rate R --duration 30 --events sink``,
record the server with py-spy while it runs (``raw`` format: one stack per
line, frames separated by ``;``, then a space and the sample count), and give
the server CPU per payment measured in a run without the profiler (py-spy's
pauses inflate the process's CPU, not the shares). Each stack goes to the
first category (in ``CATEGORIES`` order) one of whose markers occurs in it,
else to "trio scheduler, other"; a category's µs are its share of the samples
times ``--us-per-payment``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

OTHER = "trio scheduler, other"
# (category, markers): the first category with a marker in a stack takes it.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("botocore PutEvents (threads)", ("botocore", "urllib3", "boto3")),
    (
        "webhook delivery (dispatcher, sender, HTTP/1.1 client, signing, journal)",
        (
            "WebhookDispatcher",
            "WebhookSender",
            "Http1Client",
            "Http1Transport",
            "CookielessClient",
            # The delivery modules, not every "webhook_" name: the handler's
            # check_webhook_url is the handler's cost.
            "delivery/webhook_",
            "signing.py",
        ),
    ),
    ("event publisher (loop, batching)", ("EventPublisher", "event_publisher")),
    ("simulator clock", ("Simulator._clock",)),
    (
        "timer wake and outcome (store, outbox, bodies)",
        ("Simulator._timer", "Simulator._fire", "PaymentService._fire", "_Timer"),
    ),
    ("CreatePaymentIntent handler", ("PaymentApi.CreatePaymentIntent",)),
    ("rpc log line", ("structlog", "observability/logging", "logging.py")),
    (
        "gRPC response write",
        ("_send_message", "_finish_stream", "Connection._writer", "send_headers"),
    ),
    (
        "gRPC read, h2 parse, call start",
        ("Connection._reader", "receive_data", "_start_calls", "_read_until_done"),
    ),
    ("gRPC call bookkeeping, metrics", ("CallRunner", "calls.py", "prometheus")),
)


def category(stack: str) -> str:
    for name, markers in CATEGORIES:
        if any(marker in stack for marker in markers):
            return name
    return OTHER


def split(lines: Iterable[str]) -> Counter[str]:
    """Samples per category, from py-spy's raw lines (blank or malformed ones skipped)."""
    counts: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            counts[category(stack)] += int(count)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, help="py-spy record -f raw output")
    parser.add_argument(
        "--us-per-payment",
        type=float,
        required=True,
        help="server CPU µs per payment, from a run without the profiler",
    )
    args = parser.parse_args(argv)
    with args.raw.open() as f:
        counts = split(f)
    total = sum(counts.values())
    if not total:
        print(f"no samples in {args.raw}")
        return 1
    print(f"{total} samples; µs per payment = share x {args.us_per_payment:g}")
    for name, n in counts.most_common():
        print(f"{100 * n / total:5.1f} %  {args.us_per_payment * n / total:7.0f} µs  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
