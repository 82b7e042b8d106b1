"""``paysim serve --workers N``: N server processes that share one machine's ports.

Theory of operation
-------------------
One paysim process runs on one core (trio is single-threaded). To use a
machine's cores, the supervisor starts N children ``python -m paysim serve``,
each a complete paysim with its own root nursery and its own drain. They bind
the gRPC and HTTP ports with SO_REUSEPORT (``REUSE_PORT=1``, see
``entrypoints.listeners``) and the kernel spreads new connections across them;
they share their payments through the shared store, so ``--workers`` needs
STORE_URL (the CLI refuses it otherwise). The supervisor itself serves
nothing and imports no application code: it chooses the ports, starts the
children, forwards signals and restarts children that die.

Policy decisions:

* Ports are concrete before any child starts. Each configured port is first
  bound the plain way (SO_REUSEADDR only, as a single paysim does), which fails
  with EADDRINUSE when anything holds it, also another process group sharing it
  through SO_REUSEPORT: workers never share a port with strangers silently
  (nor the gRPC port with the HTTP port). A configured port 0 becomes a free
  port picked that way, and then held by a socket bound with SO_REUSEPORT alone
  (never listening, so it takes no connections) for the supervisor's whole
  life: the children can bind it, no other program can, also while a child
  restarts.
* Child ``i`` inherits the environment, plus REUSE_PORT=1, GRPC_PORT and
  HTTP_PORT (the concrete ports), WORKER_INDEX=i, and REPLICA_ID=<REPLICA_ID>-w<i>
  when REPLICA_ID is set (<REPLICA_ID>-w<i>-r<n> after its n-th restart: a new
  process is a new replica; without REPLICA_ID the store's default id is
  unique per process anyway). Its stdout and stderr are the supervisor's.
* Each child runs in its own process group, so a Ctrl-C on a terminal reaches
  only the supervisor, which forwards it once: otherwise every child would see
  two SIGINTs and stop at once instead of draining.
* Signals: the first SIGTERM/SIGINT is forwarded to every child, which drains
  (``paysim.app``); the supervisor waits for all of them, with no deadline of
  its own (each child's drain has one). A second signal is forwarded again:
  children treat it as "stop now" (``paysim.process``). A third sends SIGKILL.
* Serving: each child gets the write end of a pipe (PAYSIM_READY_FD) and writes
  one byte once both its ports listen (``report_serving``, called by the CLI
  from ``app.run``'s ``on_serving``). No timing guess tells "failed to start"
  from "crashed later".
* Start failures: a child that exits with 1 (cannot start: port taken, store
  unreachable) or 2 (bad configuration) before it was serving will fail the
  same way again, so instead of a restart loop the supervisor stops every
  child (SIGTERM, a graceful drain) and exits with that status, for the
  orchestrator to see and restart with its own backoff.
* Restarts: any other exit while no shutdown is in progress is logged with the
  exit status and the child is started again after a backoff: 1 s, doubling up
  to 30 s, back to 1 s when the child had run for 60 s (``RestartPolicy``).
* Exit status: 0 when every child exited 0 after the shutdown began; else the
  first non-zero status a child gave from then on (128 + N for a child killed
  by signal N), or the start failure's status. A child killed by the first
  forwarded signal before it had installed its handler was still starting:
  that counts as a clean stop.

Resource handling: ``run`` owns the probe sockets and closes them on return.
``Supervisor.run`` returns only when every child it started has exited; if it
is cancelled (a bug, not a signal), the children still running are killed, so
none outlives it. A supervisor killed with SIGKILL leaves its children running
(in a container they die with it, as PID 1's namespace ends).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog
import trio

from paysim.config import Settings
from paysim.entrypoints.listeners import reserve_ports
from paysim.process import report_port_in_use

log = structlog.get_logger("paysim.supervisor")

WORKER_COMMAND = (sys.executable, "-m", "paysim", "serve")
READY_FD_ENV = "PAYSIM_READY_FD"  # a worker writes one byte to this fd once it serves
_START_FAILURES = frozenset({1, 2})  # process.run_main: cannot start; cli: bad configuration


@dataclass(frozen=True)
class RestartPolicy:
    """When a child that died is started again, and when its death is fatal."""

    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    reset_after_s: float = 60.0  # a child that ran this long restarts after initial_backoff_s

    @staticmethod
    def is_start_failure(status: int, served: bool) -> bool:
        return status in _START_FAILURES and not served

    def next_delay(self, previous_s: float | None, ran_s: float) -> float:
        """The wait before the next start; ``previous_s`` is the last wait of this child."""
        if previous_s is None or ran_s >= self.reset_after_s:
            return self.initial_backoff_s
        return min(previous_s * 2, self.max_backoff_s)


def exit_status(returncode: int) -> int:
    """A process's exit status as a shell reports it: 128 + N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def worker_env(
    env: Mapping[str, str], index: int, ports: tuple[int, int], restarts: int = 0
) -> dict[str, str]:
    """The environment of worker ``index`` (``ports``: gRPC, HTTP) after ``restarts``."""
    child = dict(env)
    child.update(
        REUSE_PORT="1",
        GRPC_PORT=str(ports[0]),
        HTTP_PORT=str(ports[1]),
        WORKER_INDEX=str(index),
    )
    replica_id = env.get("REPLICA_ID", "").strip()
    if replica_id:
        # A restarted worker is another replica: the store hands what a dead one
        # left to the others when its lease ends, and a successor renewing the
        # same id would keep that lease alive.
        restarted = f"-r{restarts}" if restarts else ""
        child["REPLICA_ID"] = f"{replica_id}-w{index}{restarted}"
    return child


# -- children ------------------------------------------------------------------------


def report_serving() -> None:
    """In a worker: tell the supervisor that this process serves. Elsewhere a no-op.

    Writes one byte to the fd named by PAYSIM_READY_FD and closes it; the
    variable is removed, so this happens once.
    """
    raw = os.environ.pop(READY_FD_ENV, None)
    if raw is None:
        return
    with contextlib.suppress(OSError, ValueError):  # the supervisor is gone, or a bad value
        fd = int(raw)
        try:
            os.write(fd, b"1")
        finally:
            os.close(fd)


class Supervisor:
    """Keeps ``workers`` children of ``command`` running until ``stop``.

    Each child gets ``worker_env(env, index, ports, restarts)``. ``run``
    returns the exit status (module docstring); ``stop`` begins the shutdown,
    or escalates it when called again.
    """

    def __init__(
        self,
        workers: int,
        env: Mapping[str, str],
        ports: tuple[int, int],
        *,
        command: Sequence[str] = WORKER_COMMAND,
        policy: RestartPolicy = RestartPolicy(),
    ) -> None:
        self._workers = workers
        self._env = env
        self._ports = ports
        self._command = list(command)
        self._policy = policy
        self._children: dict[int, trio.Process] = {}  # worker index: its running process
        self._stopping = trio.Event()
        self._forwarded: list[int] = []  # the signals sent to every child, in order
        self._status = 0

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Forward ``signum`` to every child: drain, then stop now, then SIGKILL."""
        name = signal.Signals(signum).name
        if not self._forwarded:
            log.info("stopping workers", signal=name, workers=len(self._children))
        elif len(self._forwarded) == 1:
            log.warning("stopping workers now", signal=name)
        else:
            signum = signal.SIGKILL
            log.warning("killing workers", signal=name)
        self._forwarded.append(signum)
        self._stopping.set()
        for process in self._children.values():
            process.send_signal(signum)

    async def run(self) -> int:
        async with trio.open_nursery() as nursery:
            for index in range(self._workers):
                nursery.start_soon(self._keep_running, index)
        log.info("workers stopped", status=self._status)
        return self._status

    async def _keep_running(self, index: int) -> None:
        delay: float | None = None
        restarts = 0
        while not self._stopping.is_set():
            started = trio.current_time()
            pid, returncode, served = await self._run_child(index, restarts)
            ran_s = trio.current_time() - started
            status = exit_status(returncode)
            fields = {"worker": index, "pid": pid, "status": status, "served": served}
            if self._stopping.is_set():
                if returncode == -self._forwarded[0] and len(self._forwarded) == 1:
                    # Killed by the first signal before it had installed its
                    # handler: it was still starting, there was nothing to drain.
                    log.info("worker stopped while starting", **fields)
                    return
                log.info("worker stopped", **fields)
                self._record(status)
                return
            if self._policy.is_start_failure(status, served):
                log.error("worker failed to start; stopping every worker", **fields)
                self._record(status)
                self.stop()
                return
            delay = self._policy.next_delay(delay, ran_s)
            log.warning(
                "worker exited; restarting", **fields, ran_s=round(ran_s, 3), restart_in_s=delay
            )
            with trio.move_on_after(delay):
                await self._stopping.wait()
            restarts += 1

    async def _run_child(self, index: int, restarts: int) -> tuple[int, int, bool]:
        """Start worker ``index``, wait for its end: (pid, returncode, whether it served)."""
        read_fd, write_fd = os.pipe()
        try:
            try:
                env = worker_env(self._env, index, self._ports, restarts)
                env[READY_FD_ENV] = str(write_fd)
                process = await trio.lowlevel.open_process(
                    self._command, env=env, pass_fds=(write_fd,), process_group=0
                )
            finally:
                os.close(write_fd)  # the child has its copy: EOF once it exits
            self._children[index] = process
            if self._forwarded:  # the shutdown began while it was being started
                process.send_signal(self._forwarded[-1])
            log.info("worker started", worker=index, pid=process.pid, restarts=restarts)
            try:
                returncode = await process.wait()
            finally:
                del self._children[index]
                if process.returncode is None:  # cancelled: never leave a child behind
                    process.kill()
            # It has exited: whatever it wrote is in the pipe already.
            os.set_blocking(read_fd, False)
            try:
                served = os.read(read_fd, 1) == b"1"
            except BlockingIOError:  # a process it started still holds the pipe
                served = False
            return process.pid, returncode, served
        finally:
            os.close(read_fd)

    def _record(self, status: int) -> None:
        if status != 0 and self._status == 0:
            self._status = status


async def _forward_signals(
    supervisor: Supervisor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            supervisor.stop(signum)


async def _supervise(supervisor: Supervisor) -> int:
    async with trio.open_nursery() as nursery:
        await nursery.start(_forward_signals, supervisor)
        status = await supervisor.run()
        nursery.cancel_scope.cancel()
    return status


def run(
    workers: int,
    settings: Settings,
    env: Mapping[str, str],
    *,
    command: Sequence[str] = WORKER_COMMAND,
    policy: RestartPolicy = RestartPolicy(),
) -> int:
    """Run ``workers`` children of ``command`` until a signal; the exit status.

    ``settings`` gives the hosts and ports, ``env`` the environment the children
    inherit (the caller's, with its command-line overrides).
    """
    try:
        (grpc_port, http_port), held = reserve_ports(
            [(settings.grpc.host, settings.grpc.port), (settings.http.host, settings.http.port)]
        )
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        ports = {settings.grpc.port: "GRPC_PORT", settings.http.port: "HTTP_PORT"}
        return report_port_in_use("paysim", exc, ports)
    try:
        log.info(
            "starting workers",
            workers=workers,
            grpc_port=grpc_port,
            http_port=http_port,
            pid=os.getpid(),
        )
        supervisor = Supervisor(
            workers, env, (grpc_port, http_port), command=command, policy=policy
        )
        return trio.run(_supervise, supervisor)
    finally:
        for sock in held:
            sock.close()
