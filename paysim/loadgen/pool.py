"""The worker pool: start the workers, release them together, gather what they measured.

With one worker it runs in a thread of this process (nothing to spawn, and
tests can drive it in-process); with more, each is a ``spawn``ed process
(never ``fork``: grpcio's threads do not survive a fork) pinned to its core.
Both talk over a ``multiprocessing.Pipe`` with the protocol described in
``client.py``, so the code here does not care which it is.

Resource handling: ``WorkerPool`` is a context manager that owns the workers
and the pipes: on exit, whatever happened, it tells waiting workers to stop,
terminates processes still alive after a grace period and closes the pipes.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from types import TracebackType
from typing import Any

from paysim.loadgen import client
from paysim.loadgen.phases import PhaseClock
from paysim.loadgen.results import Stats

JOIN_TIMEOUT_S = 5.0
THREAD_JOIN_TIMEOUT_S = 1.0  # a worker thread is a daemon: it ends with the process anyway
POLL_S = 0.25

Progress = Callable[[list[tuple[int, int]]], None]


class RunError(Exception):
    """The run could not be made (a worker failed, the target is unreachable); one line."""


class WorkerPool:
    def __init__(self, plans: list[client.Plan], processes: bool) -> None:
        self.processes = processes
        self._conns: list[Connection] = []
        self._runners: list[Any] = []
        self._started = False
        context = multiprocessing.get_context("spawn")
        for plan in plans:
            ours, theirs = context.Pipe()
            runner: Any
            if processes:
                runner = context.Process(
                    target=client.process_main, args=(plan, theirs), daemon=True
                )
            else:
                runner = threading.Thread(
                    target=client.run_worker, args=(plan, theirs), daemon=True
                )
            runner.start()
            if processes:
                theirs.close()  # the child has its own copy; EOF then means it died
            self._conns.append(ours)
            self._runners.append(runner)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _receive(self, index: int) -> tuple[str, Any]:
        try:
            message: tuple[str, Any] = self._conns[index].recv()
        except (EOFError, OSError):
            raise RunError(f"worker {index} died without a word") from None
        if message[0] == "failed":
            raise RunError(str(message[1]))
        return message

    def wait_ready(self) -> None:
        """Block until every worker connected and warmed up; RunError if one failed."""
        pending = set(range(len(self._conns)))
        while pending:
            for conn in wait([self._conns[i] for i in pending], timeout=POLL_S):
                index = self._conns.index(conn)  # type: ignore[arg-type]
                kind, _ = self._receive(index)
                if kind == "ready":
                    pending.discard(index)

    def start(
        self, t0: float, clock: PhaseClock | None = None, duration_s: float | None = None
    ) -> None:
        """Release every worker at ``t0`` (``time.monotonic()``, shared by the host), with
        the fault timeline's phases if one plays and, if given, a new duration."""
        for conn in self._conns:
            conn.send(("start", (t0, clock, duration_s)))
        self._started = True

    def collect(self, progress: Progress) -> list[Stats]:
        """Gather every worker's result, calling ``progress`` with (calls, errors) per worker."""
        latest = [(0, 0)] * len(self._conns)
        results: dict[int, Stats] = {}
        while len(results) < len(self._conns):
            waiting = [c for i, c in enumerate(self._conns) if i not in results]
            for conn in wait(waiting, timeout=POLL_S):
                index = self._conns.index(conn)  # type: ignore[arg-type]
                kind, value = self._receive(index)
                if kind == "progress":
                    latest[index] = value
                elif kind == "result":
                    results[index] = value
                    latest[index] = (value.count, value.error_count)
            progress(latest)
        return [results[i] for i in range(len(self._conns))]

    def close(self) -> None:
        if not self._started:
            for conn in self._conns:
                try:
                    conn.send(("stop", None))
                except (OSError, ValueError):
                    pass
        for runner in self._runners:
            runner.join(JOIN_TIMEOUT_S if self.processes else THREAD_JOIN_TIMEOUT_S)
            if self.processes and runner.is_alive():
                runner.terminate()
                runner.join(JOIN_TIMEOUT_S)
        for conn in self._conns:
            conn.close()
