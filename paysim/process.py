"""What every paysim process shares: signal handling and the exit-status policy.

``watch_signals``: the first SIGTERM/SIGINT sets ``shutdown`` (a graceful
drain), a second one cancels ``force`` and raises ``ForcedExit`` (stop now:
everything is cancelled at once, the drain is abandoned). ``run_main`` runs a
trio main function and maps the outcome to an exit status:

* 0 after a graceful stop, also when the grace period ran out: the drain ran
  its course and whatever it could not deliver was logged and counted;
* 128 + N when a second signal N cut the drain short (143 for SIGTERM, 130 for
  SIGINT), the status a shell reports for a process killed by that signal: the
  stop was not graceful and a supervisor or script can tell;
* 1 when a port is already taken (one line naming the setting: never a silent
  shared port), 130 on an unhandled Ctrl-C; anything else is a bug and raises.
"""

from __future__ import annotations

import errno
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import NoReturn, TypeVar

import structlog
import trio

log = structlog.get_logger("paysim.process")

E = TypeVar("E", bound=BaseException)


class ForcedExit(Exception):
    """A second signal stopped the process before its drain finished."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by a second {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


async def watch_signals(shutdown: trio.Event, force: trio.CancelScope) -> NoReturn:
    """Set ``shutdown`` on the first signal; on the second cancel ``force`` and raise.

    The ``ForcedExit`` ends the caller's nursery (so every task is cancelled,
    also those outside ``force``) and reaches ``run_main`` for the exit status.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not shutdown.is_set():
                log.info("signal received; draining", signal=signal.Signals(signum).name)
                shutdown.set()
            else:
                log.warning("second signal; stopping now", signal=signal.Signals(signum).name)
                force.cancel()
                raise ForcedExit(signum)
    raise AssertionError("unreachable")  # pragma: no cover - the receiver never ends


def find_exception(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` in ``exc`` or, for an exception group, anywhere inside it."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_exception(inner, kind)
            if found is not None:
                return found
    return None


def find_os_error(exc: BaseException) -> OSError | None:
    """The first OSError in ``exc`` or, for an exception group, anywhere inside it."""
    return find_exception(exc, OSError)


class StartError(Exception):
    """A dependency the process needs cannot be used; ``str()`` is one line, no secrets."""


def report_port_in_use(name: str, error: OSError, ports: Mapping[int, str]) -> int:
    """Say on stderr which port is taken and the setting that moves it; the exit
    status for it, 1 (cannot start).

    ``ports`` maps each port the process listens on to its setting (GRPC_PORT…);
    the error names its port when it is a ``listeners.PortInUseError``.
    """
    port = getattr(error, "port", None)
    if isinstance(port, int) and port in ports:
        where = f"port {port} ({ports[port]}) is already in use"
        fix = f"stop the process that holds it, or set {ports[port]} to another port"
    else:
        named = ", ".join(f"{number} ({setting})" for number, setting in ports.items())
        where = f"a port is already in use ({named})"
        fix = "stop the process that holds it, or choose other ports"
    print(f"{name}: cannot listen: {where}; {fix}", file=sys.stderr)
    return 1


def run_main(name: str, main: Callable[[], Awaitable[object]], ports: Mapping[int, str]) -> int:
    """``trio.run(main)`` with paysim's exit-status policy."""
    try:
        trio.run(main)
    except BaseException as exc:
        forced = find_exception(exc, ForcedExit)
        if forced is not None:
            return forced.exit_status
        os_error = find_os_error(exc)
        if os_error is not None and os_error.errno == errno.EADDRINUSE:
            return report_port_in_use(name, os_error, ports)
        start_error = find_exception(exc, StartError)
        if start_error is not None:
            print(f"{name}: cannot start: {start_error}", file=sys.stderr)
            return 1
        if isinstance(exc, KeyboardInterrupt):
            return 130
        raise
    return 0
