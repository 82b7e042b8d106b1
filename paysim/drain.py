"""The graceful part of a shutdown, and the report of what it left behind.

``drain`` runs inside the servers' lifetime (``paysim.app``), so every part it
calls into is still open; the lifetimes around it close when it returns. In
order (README "Shutdown"):

1. readiness turns NOT_SERVING at once (``/readyz`` and gRPC health read the
   same ``Readiness``), and the process keeps serving for DRAIN_DELAY_MS:
   Kubernetes removes endpoints asynchronously, so calls still arrive;
2. the grace window of SHUTDOWN_GRACE_MS opens. With the pending policy
   "resolve", timers due in its first half keep their time and every later one
   fires now (the outcome was decided at creation), also for payments created
   by calls still in flight; the second half is left for their webhooks and
   events (``FLUSH_SHARE``). With "handover" (a shared store) the local timers
   stop once the calls are done and their payments go to the other replicas;
3. the gRPC server stops accepting, sends GOAWAY on every connection and waits
   for in-flight calls; then the simulator must be idle; then the outbox
   flushes every channel (together); a replica then leaves the set, handing
   over what is still undelivered;
4. when all of that is done, or the grace runs out, ``report_left_behind``
   logs whatever is left with its payment ids and counts it
   (``paysim_shutdown_undelivered_total``,
   ``paysim_shutdown_unresolved_payments_total``): never dropped silently.

So a shutdown takes at most DRAIN_DELAY_MS + SHUTDOWN_GRACE_MS plus the final
cancellation: the budget that ``k8s/`` sizes terminationGracePeriodSeconds for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
import trio

from paysim.entrypoints.grpc.transport import GrpcServer
from paysim.wiring import Wired

log = structlog.get_logger("paysim.app")

# The share of the grace window kept for delivery: with the "resolve" policy a
# timer due later than (grace end - FLUSH_SHARE * grace) fires when the window
# opens, so that its webhook and event have at least that long to go out (a
# slow receiver, a retry or two) instead of racing the end of the window.
FLUSH_SHARE = 0.5
_IDS_PER_LINE = 1_000  # a report line names at most this many payment ids


async def drain(wired: Wired, grpc: GrpcServer) -> None:
    """Steps 1 to 3 of the module docstring, within the drain delay plus the grace."""
    settings, simulator, replica = wired.settings, wired.simulator, wired.replica
    wired.readiness.mark_draining()
    resolve = settings.pending_on_shutdown == "resolve"
    log.info(
        "shutting down",
        drain_delay_s=settings.drain_delay_s,
        grace_s=settings.shutdown_grace_s,
        pending_policy=settings.pending_on_shutdown,
        pending=simulator.pending,
    )
    await trio.sleep(settings.drain_delay_s)  # not ready, still serving
    started = trio.current_time()
    deadline = started + settings.shutdown_grace_s
    if resolve:
        cutoff = deadline - settings.shutdown_grace_s * FLUSH_SHARE
        moved = simulator.resolve_by(cutoff)
        log.info(
            "resolving pending payments",
            early=len(moved),
            on_time=simulator.pending - len(moved),
            on_time_until_s=round(cutoff - started, 3),
        )
    try:
        with trio.move_on_at(deadline) as grace:
            await grpc.drain()
            if resolve:
                await simulator.wait_idle()
            elif replica is not None:
                await replica.hand_over()
            await wired.outbox.flush()
    finally:
        if replica is not None:
            await replica.leave()
    if grace.cancelled_caught:
        log.warning("grace period over; cancelling what is left", grace_s=settings.shutdown_grace_s)
    else:
        log.info("drained", s=round(trio.current_time() - started, 3))


def report_left_behind(wired: Wired) -> None:
    """Log (with payment ids) and count every outcome the drain could not announce.

    Synchronous, so it runs even while everything around it is being cancelled
    (a second signal).
    """
    metrics = wired.metrics
    for channel, ids in wired.outbox.undelivered():
        if ids:
            metrics.shutdown_undelivered(channel, len(ids))
            _log_ids(log.warning, f"undelivered {channel}s at shutdown", ids, channel=channel)
    pending = wired.simulator.pending_ids()
    if not pending:
        return
    if wired.settings.pending_on_shutdown == "handover":
        _log_ids(log.info, "pending payments left for another replica", pending)
    else:
        metrics.shutdown_unresolved(len(pending))
        _log_ids(log.warning, "unresolved payments at shutdown", pending)


def _log_ids(report: Callable[..., Any], event: str, ids: list[str], **fields: Any) -> None:
    """One line per ``_IDS_PER_LINE`` payment ids; ``count`` items in all (ids may repeat)."""
    unique = sorted(set(ids))
    for start in range(0, len(unique), _IDS_PER_LINE):
        report(event, count=len(ids), payment_ids=unique[start : start + _IDS_PER_LINE], **fields)
