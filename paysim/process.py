"""What every paysim process shares: signal handling and the exit-status policy.

``watch_signals``: the first SIGTERM/SIGINT sets ``shutdown`` (a graceful
drain), a second one cancels ``force`` (stop now). ``run_main`` runs a trio
main function and maps the outcome to an exit status: 0 after a clean stop,
1 when a port is already taken (one line naming the setting: never a silent
shared port), 130 on an unhandled Ctrl-C; anything else is a bug and raises.
"""

from __future__ import annotations

import errno
import signal
import sys
from collections.abc import Awaitable, Callable

import structlog
import trio

log = structlog.get_logger("paysim.process")


async def watch_signals(shutdown: trio.Event, force: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not shutdown.is_set():
                log.info("signal received; draining", signal=signal.Signals(signum).name)
                shutdown.set()
            else:
                log.warning("second signal; stopping now", signal=signal.Signals(signum).name)
                force.cancel()
                return


def find_os_error(exc: BaseException) -> OSError | None:
    """The first OSError in ``exc`` or, for an exception group, anywhere inside it."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_os_error(inner)
            if found is not None:
                return found
    return None


def run_main(name: str, main: Callable[[], Awaitable[object]], ports_hint: str) -> int:
    """``trio.run(main)`` with paysim's exit-status policy."""
    try:
        trio.run(main)
    except BaseException as exc:
        os_error = find_os_error(exc)
        if os_error is not None and os_error.errno == errno.EADDRINUSE:
            print(
                f"{name}: cannot listen: address already in use ({os_error.strerror}); "
                f"is another process using {ports_hint}?",
                file=sys.stderr,
            )
            return 1
        if isinstance(exc, KeyboardInterrupt):
            return 130
        raise
    return 0
