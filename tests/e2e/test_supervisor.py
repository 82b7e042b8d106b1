"""``paysim serve --workers N``: the CLI's refusals, shared listeners, the supervisor.

* The CLI and the policy's pure parts (backoff, start failures, child
  environment) are plain unit tests.
* Shared listeners bind real sockets in this process: two servers on one port
  with ``reuse_port=True``, and the ports the supervisor reserves.
* ``Supervisor`` runs in this process over fake children (``CHILD``: a few
  lines of Python that report "ready" on a socket once their signal handler is
  installed), so the policy is tested without the application, waiting on real
  process events only. One test runs the supervisor as its own process and
  sends it real signals, also to its whole process group (a terminal's Ctrl-C).
* End to end, ``paysim serve --workers 2`` runs against a real ``redis-server``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from paysim import cli, supervisor
from paysim.entrypoints.grpc.transport import GrpcLimits, GrpcServer, Registry
from paysim.entrypoints.http import HttpApp, HttpLimits, HttpResponse, serve_http
from paysim.entrypoints.listeners import open_shared_listeners, reserve_ports
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics
from paysim.supervisor import (
    RestartPolicy,
    Supervisor,
    exit_status,
    worker_env,
)
from tests.e2e.test_app_lifecycle import CLI, ROOT, LineReader, cli_env, http_get
from tests.redis_fixtures import RedisProcess, start_redis

# -- the command line ------------------------------------------------------------------


@pytest.fixture
def no_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REUSE_PORT", raising=False)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Replace both ways to serve by recorders: nothing is started."""
    recorded: list[tuple[str, Any]] = []

    def serve(settings: Any) -> int:
        recorded.append(("serve", settings))
        return 0

    def run_supervisor(*args: Any) -> int:
        recorded.append(("supervisor", args))
        return 0

    monkeypatch.setattr(cli, "serve", serve)
    monkeypatch.setattr(supervisor, "run", run_supervisor)
    return recorded


@pytest.mark.usefixtures("no_store")
def test_workers_without_a_shared_store_is_a_configuration_error(capsys, calls):
    assert cli.main(["serve", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "paysim: configuration error: STORE_URL: --workers 2 runs processes that must share "
        "their payments: set STORE_URL to a Redis URL"
    ]
    assert calls == []


@pytest.mark.usefixtures("no_store")
@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_workers_must_be_a_whole_number_from_1(capsys, calls, value):
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--workers", value])
    assert exited.value.code == 2
    assert "argument --workers:" in capsys.readouterr().err
    assert calls == []


@pytest.mark.usefixtures("no_store")
def test_one_worker_is_todays_single_process(calls):
    assert cli.main(["serve", "--workers", "1"]) == 0
    assert cli.main(["serve"]) == 0
    assert [name for name, _ in calls] == ["serve", "serve"]
    assert not calls[0][1].reuse_port


def test_workers_run_the_supervisor_with_the_overridden_environment(monkeypatch, calls):
    monkeypatch.setenv("STORE_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setattr("paysim.observability.logging.configure", lambda *a: None)
    assert cli.main(["serve", "--workers", "3", "--grpc-port", "9030"]) == 0
    [(name, (workers, settings, env))] = calls
    assert (name, workers) == ("supervisor", 3)
    assert settings.grpc.port == 9030
    assert env["GRPC_PORT"] == "9030"
    assert env["STORE_URL"] == "redis://127.0.0.1:6379/0"


def test_serve_help_documents_workers(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--workers N" in help_text
    assert "N > 1 needs STORE_URL" in help_text


# -- the policy ------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_and_resets_after_a_long_run():
    policy = RestartPolicy()
    delays, delay = [], None
    for _ in range(7):
        delay = policy.next_delay(delay, ran_s=5.0)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.next_delay(30.0, ran_s=59.9) == 30.0
    assert policy.next_delay(30.0, ran_s=60.0) == 1.0


@pytest.mark.parametrize(
    ("status", "served", "fatal"),
    [(1, False, True), (2, False, True), (1, True, False), (3, False, False), (137, False, False)],
)
def test_only_exit_1_or_2_before_serving_is_a_start_failure(status, served, fatal):
    assert RestartPolicy.is_start_failure(status, served) is fatal


def test_report_serving_writes_one_byte_to_the_supervisors_pipe_once(monkeypatch):
    read_fd, write_fd = os.pipe()
    monkeypatch.setenv(supervisor.READY_FD_ENV, str(write_fd))
    try:
        supervisor.report_serving()
        supervisor.report_serving()  # the variable is gone: a no-op
        assert supervisor.READY_FD_ENV not in os.environ
        assert os.read(read_fd, 10) == b"1"
        assert os.read(read_fd, 10) == b""  # and the write end is closed
    finally:
        os.close(read_fd)


def test_exit_status_is_what_a_shell_reports():
    assert [exit_status(rc) for rc in (0, 1, 143, -signal.SIGKILL)] == [0, 1, 143, 137]


def test_worker_env_makes_each_child_one_of_the_workers():
    env = {"PATH": "/bin", "GRPC_PORT": "0", "REUSE_PORT": "0"}
    child = worker_env(env, 1, (41000, 41001))
    assert child == {
        "PATH": "/bin",
        "GRPC_PORT": "41000",
        "HTTP_PORT": "41001",
        "REUSE_PORT": "1",
        "WORKER_INDEX": "1",
    }
    named = {**env, "REPLICA_ID": "pod-7"}
    assert worker_env(named, 1, (1, 2))["REPLICA_ID"] == "pod-7-w1"
    assert worker_env(named, 1, (1, 2), restarts=2)["REPLICA_ID"] == "pod-7-w1-r2"
    assert env["REUSE_PORT"] == "0"  # the caller's mapping is left alone


# -- ports and shared listeners ----------------------------------------------------------


@pytest.fixture
def reserved() -> Iterator[tuple[list[int], list[socket.socket]]]:
    ports, held = reserve_ports([("127.0.0.1", 0), ("127.0.0.1", 0)])
    yield ports, held
    for sock in held:
        sock.close()


def plain_listener(port: int = 0) -> socket.socket:
    """A listener the way any other program (or a single paysim) binds."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def is_in_use(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE


async def test_a_port_0_is_replaced_by_a_free_port_held_for_the_workers_only(reserved):
    (grpc_port, http_port), held = reserved
    assert 0 < grpc_port != http_port > 0
    assert [s.getsockname()[1] for s in held] == [grpc_port, http_port]
    with pytest.raises(OSError, match="in use"):
        plain_listener(grpc_port)
    listeners = await open_shared_listeners("127.0.0.1", grpc_port)
    try:
        assert [ln.socket.getsockname()[1] for ln in listeners] == [grpc_port]
    finally:
        for listener in listeners:
            await listener.aclose()


def test_a_configured_port_is_checked_free_and_not_held():
    with plain_listener() as probe:
        free = probe.getsockname()[1]
    ports, held = reserve_ports([("127.0.0.1", free)])
    assert (ports, held) == ([free], [])


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain-holder", "reuseport-group"])
def test_a_port_held_by_anyone_else_is_refused_before_any_child_starts(reuse_port):
    with socket.socket() as holder:
        if reuse_port:  # another paysim --workers: sharing with it would be silent
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(OSError, match="in use"):
            reserve_ports([("127.0.0.1", holder.getsockname()[1])])


def test_the_grpc_and_http_ports_must_differ():
    with plain_listener() as probe:
        free = probe.getsockname()[1]
    with pytest.raises(OSError, match="in use"):
        reserve_ports([("127.0.0.1", free), ("", free)])


def labelled_app(label: bytes) -> HttpApp:
    app = HttpApp(Readiness(), Metrics())

    async def who(request: Any) -> HttpResponse:
        return HttpResponse(200, label, content_type="text/plain")

    app.add_route("/who", frozenset({"GET"}), who)
    return app


async def test_two_http_servers_share_a_port_with_reuse_port_and_both_accept(nursery):
    serve = functools.partial(serve_http, reuse_port=True)
    port = await nursery.start(serve, "127.0.0.1", 0, labelled_app(b"a"), HttpLimits())
    again = await nursery.start(serve, "127.0.0.1", port, labelled_app(b"b"), HttpLimits())
    assert again == port
    seen: set[bytes] = set()
    for _ in range(64):  # the kernel hashes each new connection to one of them
        status, body = await http_get(port, "/who")
        assert status == 200
        seen.add(body)
        if len(seen) == 2:
            break
    assert seen == {b"a", b"b"}


async def test_two_grpc_servers_share_a_port_with_reuse_port_and_both_accept(nursery):
    servers = [GrpcServer(Registry(), GrpcLimits(), Metrics()) for _ in range(2)]
    serve = [functools.partial(server.serve, reuse_port=True) for server in servers]
    port = await nursery.start(serve[0], "127.0.0.1", 0)
    assert await nursery.start(serve[1], "127.0.0.1", port) == port
    streams: list[trio.SocketStream] = []
    try:
        for _ in range(64):
            streams.append(await trio.open_tcp_stream("127.0.0.1", port))
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            if all(server.connections for server in servers):
                break
        assert all(server.connections for server in servers)
    finally:
        for stream in streams:
            await stream.aclose()


@pytest.mark.parametrize("server", ["http", "grpc"])
async def test_reuse_port_still_refuses_a_port_held_by_a_plain_listener(server):
    with plain_listener() as holder:
        port = holder.getsockname()[1]
        if server == "http":
            serve: Any = functools.partial(
                serve_http, "127.0.0.1", port, labelled_app(b"a"), HttpLimits(), reuse_port=True
            )
        else:
            grpc = GrpcServer(Registry(), GrpcLimits(), Metrics())
            serve = functools.partial(grpc.serve, "127.0.0.1", port, reuse_port=True)
        with pytest.RaisesGroup(
            pytest.RaisesExc(OSError, check=is_in_use), allow_unwrapped=True, flatten_subgroups=True
        ):
            async with trio.open_nursery() as inner:
                await inner.start(serve)


# -- the supervisor over fake children ---------------------------------------------------

# A stand-in for ``paysim serve``: installs its SIGTERM/SIGINT handler, tells
# the supervisor it serves (PAYSIM_READY_FD), reports "<worker index> <pid>
# <replica id>" on READY_PORT and waits. ON_SIGNAL says what a signal does:
# "paysim" reports "draining", drains for DRAIN_S and exits 0, a second signal
# during the drain exits 128 + N (paysim.process); "exit3" exits 3; "ignore"
# ignores it. On its first start, a worker named in FAIL_FIRST exits with
# FAIL_STATUS before it serves, one named in CRASH_FIRST after.
CHILD = r"""
import os, signal, socket, sys, time
index, mode = os.environ["WORKER_INDEX"], os.environ.get("ON_SIGNAL", "paysim")
def report(word):
    with socket.create_connection(("127.0.0.1", int(os.environ["READY_PORT"]))) as ready:
        ready.sendall(f"{index} {os.getpid()} {word}\n".encode())
seen = []
def on_signal(signum, frame):
    seen.append(signum)
    if mode == "exit3":
        sys.exit(3)
    if len(seen) > 1:
        os._exit(128 + signum)
if mode == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
replica_id = os.environ["REPLICA_ID"]
first = replica_id.endswith("-w" + index)
if first and index in os.environ.get("FAIL_FIRST", "").split(","):
    sys.exit(int(os.environ["FAIL_STATUS"]))
served = int(os.environ["PAYSIM_READY_FD"])
os.write(served, b"1")
os.close(served)
report(replica_id)
if first and index in os.environ.get("CRASH_FIRST", "").split(","):
    sys.exit(int(os.environ["FAIL_STATUS"]))
while not seen:
    time.sleep(0.05)  # a signal runs its handler at once; the loop sees it within 50 ms
report("draining")
time.sleep(float(os.environ.get("DRAIN_S", "0")))  # a second signal's handler ends it
sys.exit(0)
"""
FAKE = [sys.executable, "-c", CHILD]
QUICK = RestartPolicy(initial_backoff_s=0.01)


@dataclass
class Ready:
    """What children reported, in order: (worker index, pid, replica id or "draining")."""

    port: int
    receive: trio.MemoryReceiveChannel[tuple[int, int, str]]
    pids: list[int] = field(default_factory=list)

    async def next(self) -> tuple[int, int, str]:
        with trio.fail_after(10):
            index, pid, replica_id = await self.receive.receive()
        self.pids.append(pid)
        return index, pid, replica_id

    async def all(self, count: int) -> dict[int, int]:
        """The pid of each of ``count`` workers, once every one is ready."""
        return {index: pid for index, pid, _ in [await self.next() for _ in range(count)]}


@pytest.fixture
async def ready(nursery: trio.Nursery) -> Ready:
    send, receive = trio.open_memory_channel[tuple[int, int, str]](100)

    async def report(stream: trio.SocketStream) -> None:
        async with stream:
            line = b""
            while not line.endswith(b"\n"):
                chunk = await stream.receive_some(100)
                if not chunk:
                    return
                line += chunk
        index, pid, replica_id = line.decode().split()
        await send.send((int(index), int(pid), replica_id))

    listeners = await nursery.start(functools.partial(trio.serve_tcp, report, 0, host="127.0.0.1"))
    # No clean-up of children here: a Supervisor that is cancelled (the test
    # failed) kills the children it still has.
    return Ready(listeners[0].socket.getsockname()[1], receive)


@dataclass
class Supervised:
    supervisor: Supervisor
    done: trio.Event = field(default_factory=trio.Event)
    status: int | None = None

    async def run(self) -> None:
        self.status = await self.supervisor.run()
        self.done.set()

    async def wait(self) -> int:
        with trio.fail_after(10):
            await self.done.wait()
        assert self.status is not None
        return self.status


def start_supervisor(
    nursery: trio.Nursery, ready: Ready, workers: int = 2, **env: str
) -> Supervised:
    environment = {**os.environ, "READY_PORT": str(ready.port), "REPLICA_ID": "t", **env}
    supervised = Supervised(Supervisor(workers, environment, (1, 2), command=FAKE, policy=QUICK))
    nursery.start_soon(supervised.run)
    return supervised


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_workers_get_their_index_and_replica_id_and_drain_on_stop(nursery, ready):
    supervised = start_supervisor(nursery, ready, workers=3, DRAIN_S="0.2")
    reports = sorted([await ready.next() for _ in range(3)])
    assert [(index, replica_id) for index, _, replica_id in reports] == [
        (0, "t-w0"),
        (1, "t-w1"),
        (2, "t-w2"),
    ]
    supervised.supervisor.stop(signal.SIGTERM)
    assert await supervised.wait() == 0  # each got one signal: a second would exit 143
    assert not any(alive(pid) for _, pid, _ in reports)


async def test_the_first_non_zero_status_after_the_signal_is_the_exit_status(nursery, ready):
    supervised = start_supervisor(nursery, ready, ON_SIGNAL="exit3")
    await ready.all(2)
    supervised.supervisor.stop(signal.SIGTERM)
    assert await supervised.wait() == 3


async def test_a_second_stop_forwards_the_signal_again_and_children_stop_now(nursery, ready):
    supervised = start_supervisor(nursery, ready, DRAIN_S="30")
    await ready.all(2)
    supervised.supervisor.stop(signal.SIGINT)
    assert [(await ready.next())[2] for _ in range(2)] == ["draining", "draining"]
    supervised.supervisor.stop(signal.SIGINT)
    assert await supervised.wait() == 128 + signal.SIGINT


async def test_a_third_stop_kills_children_that_do_not_stop(nursery, ready):
    supervised = start_supervisor(nursery, ready, ON_SIGNAL="ignore")
    pids = await ready.all(2)
    for _ in range(2):
        supervised.supervisor.stop(signal.SIGTERM)
    assert not supervised.done.is_set()
    assert all(alive(pid) for pid in pids.values())
    supervised.supervisor.stop(signal.SIGTERM)
    assert await supervised.wait() == 128 + signal.SIGKILL


async def test_a_child_that_dies_is_restarted_as_a_new_replica(nursery, ready):
    supervised = start_supervisor(nursery, ready)
    pids = await ready.all(2)
    os.kill(pids[1], signal.SIGKILL)
    index, pid, replica_id = await ready.next()
    assert (index, replica_id) == (1, "t-w1-r1")
    assert pid != pids[1]
    assert alive(pids[0])
    supervised.supervisor.stop(signal.SIGTERM)
    assert await supervised.wait() == 0


async def test_an_exit_1_after_serving_is_a_crash_and_restarted(nursery, ready):
    supervised = start_supervisor(nursery, ready, workers=1, CRASH_FIRST="0", FAIL_STATUS="1")
    assert [(await ready.next())[2] for _ in range(2)] == ["t-w0", "t-w0-r1"]
    supervised.supervisor.stop(signal.SIGTERM)
    assert await supervised.wait() == 0


@pytest.mark.parametrize("status", [1, 2])
async def test_a_start_failure_stops_every_worker_with_its_status(nursery, ready, status):
    supervised = start_supervisor(nursery, ready, FAIL_FIRST="1", FAIL_STATUS=str(status))
    # Worker 0 may or may not have reported ready before it was stopped; worker 1
    # never does, and is not started again.
    assert await supervised.wait() == status
    reports = []
    while True:
        try:
            reports.append(ready.receive.receive_nowait())
        except trio.WouldBlock:
            break
    assert all(index == 0 for index, _, _ in reports)


# -- the supervisor as its own process, with real signals --------------------------------

SUPERVISOR_MAIN = """
import os, sys
from paysim import supervisor
from paysim.config import Settings
from paysim.observability import logging
logging.configure("info", json=True)
sys.exit(supervisor.run(2, Settings.from_env(os.environ), os.environ, command=sys.argv[1:]))
"""


async def test_a_terminal_ctrl_c_reaches_each_child_once_through_the_supervisor(ready):
    env = cli_env(READY_PORT=str(ready.port), REPLICA_ID="t", DRAIN_S="0.5")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", SUPERVISOR_MAIN, *FAKE],
        env=env,
        cwd=ROOT,
        process_group=0,  # its own group, as a shell makes for a foreground job
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        out = LineReader(proc.stdout)
        with trio.fail_after(10):
            starting = await out.until(lambda r: r["event"] == "starting workers")
        assert starting["grpc_port"] > 0
        assert starting["http_port"] > 0
        pids = await ready.all(2)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        with trio.fail_after(10):
            records = await out.rest()
            await proc.wait()
    finally:
        if proc.returncode is None:  # the test failed: its children would outlive it
            for pid in [*ready.pids, proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0  # a child that saw SIGINT twice would exit 130
    stopped = [r for r in records if r["event"] == "worker stopped"]
    assert sorted((r["worker"], r["pid"], r["status"]) for r in stopped) == [
        (0, pids[0], 0),
        (1, pids[1], 0),
    ]


# -- end to end: paysim serve --workers 2 on a real Redis --------------------------------


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = start_redis(tmp_path)
    yield server
    server.stop()


class Workers:
    """``paysim serve --workers 2`` as a subprocess, and what its log said.

    The supervisor and both children write to one pipe, so lines come in any
    order between processes: ``until`` also finds a line read while waiting for
    another one.
    """

    def __init__(self, proc: trio.Process) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.out = LineReader(proc.stdout)
        self.unclaimed: list[dict[str, Any]] = []
        self.pids: set[int] = set()  # every child started: killed if the test fails

    async def until(self, event: str, **fields: Any) -> dict[str, Any]:
        """The first line not returned before with this event and these fields."""
        with trio.fail_after(20):
            while True:
                for record in self.unclaimed:
                    if record["event"] == event and fields.items() <= record.items():
                        self.unclaimed.remove(record)
                        return record
                record = await self.out.until(lambda r: True)
                if record["event"] == "worker started":
                    self.pids.add(record["pid"])
                self.unclaimed.append(record)

    async def serving(self, grpc_port: int, http_port: int) -> None:
        await self.until("paysim serving", grpc_port=grpc_port, http_port=http_port)

    def kill_all(self) -> None:
        """After a failed test: the supervisor and every child it started."""
        for pid in [*self.pids, self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def workers(redis: RedisProcess) -> AsyncIterator[Workers]:
    env = cli_env(STORE_URL=redis.url, STORE_KEY_PREFIX="workers", DRAIN_DELAY_MS="100")
    proc = await trio.lowlevel.open_process(
        [*CLI, "--workers", "2"], stdout=subprocess.PIPE, env=env, cwd=ROOT
    )
    running = Workers(proc)
    try:
        yield running
    finally:
        if proc.returncode is None:
            running.kill_all()
            with trio.CancelScope(shield=True):
                await proc.wait()


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


async def assert_stops_cleanly(running: Workers) -> list[dict[str, Any]]:
    running.proc.send_signal(signal.SIGTERM)
    with trio.fail_after(15):
        records = await running.out.rest()  # EOF: the children's stdout is closed too
        await running.proc.wait()
    assert running.proc.returncode == 0
    assert not any(alive(pid) for pid in running.pids)
    return records


async def test_two_workers_share_both_ports_and_stop_cleanly(workers):
    starting = await workers.until("starting workers", workers=2)
    ports = starting["grpc_port"], starting["http_port"]
    pids = {(await workers.until("worker started"))["pid"] for _ in range(2)}
    for _ in range(2):
        await workers.serving(*ports)
    assert all(parent_of(pid) == workers.proc.pid for pid in pids)
    for _ in range(8):
        assert await http_get(ports[1], "/health") == (
            200,
            b'{"status":"healthy","service":"payment-sim-api"}',
        )
    records = await assert_stops_cleanly(workers)
    stopped = [
        (r["pid"], r["status"], r["served"]) for r in records if r["event"] == "worker stopped"
    ]
    assert sorted(stopped) == sorted((pid, 0, True) for pid in pids)
    assert records[-1]["event"] == "workers stopped"


async def test_a_killed_worker_is_restarted_and_serves_again(workers):
    starting = await workers.until("starting workers", workers=2)
    ports = starting["grpc_port"], starting["http_port"]
    first = await workers.until("worker started")
    await workers.until("worker started")
    for _ in range(2):
        await workers.serving(*ports)
    os.kill(first["pid"], signal.SIGKILL)
    exited = await workers.until("worker exited; restarting", pid=first["pid"])
    assert exited["status"] == 128 + signal.SIGKILL
    assert exited["served"] is True  # so a crash, not a start failure
    assert exited["restart_in_s"] == 1.0
    restarted = await workers.until("worker started", worker=first["worker"], restarts=1)
    assert restarted["pid"] != first["pid"]
    await workers.serving(*ports)
    assert (await http_get(ports[1], "/readyz"))[0] == 200
    await assert_stops_cleanly(workers)
