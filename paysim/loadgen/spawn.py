"""``--spawn``: run ``python -m paysim serve`` for the run, pinned to chosen cores.

The server runs as in production, and as ``paysim.benchmarks.h2load`` runs
it, so the two tools measure the same thing: ENVIRONMENT=production (a JSON
log line per RPC, to /dev/null), metrics on, loopback only, free ports picked
here, and EVENTS_ENABLED=false unless ``--events`` (only the gRPC path is
measured; the event bus would need AWS). ``--server-env KEY=VALUE`` adds or
overrides anything. It is pinned with ``taskset -c CORES``, which execs the
server, so the pid we hold is the server's own and ``/proc/PID/stat`` gives
its CPU.

Ready means: the gRPC port accepts connections and the standard health
service answers SERVING. The server's stderr goes to a temporary file whose
tail is shown if it dies. Stopping is SIGTERM (the server's graceful drain),
then SIGKILL after 30 s.

Resource handling: ``spawned_server`` owns the process and the stderr file,
and stops and removes both on exit, also after an error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paysim.loadgen import procstat

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


class SpawnError(Exception):
    """The server could not be started; ``str()`` says why in one line (plus its stderr)."""


@dataclass
class SpawnedServer:
    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    cores: tuple[int, ...]
    stderr: IO[bytes]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def cpu_s(self) -> float | None:
        return procstat.process_cpu_s(self.process.pid)

    def stderr_tail(self, lines: int = 5) -> str:
        self.stderr.flush()
        text = Path(self.stderr.name).read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_env(
    grpc_port: int, http_port: int, events: bool, extra: dict[str, str]
) -> dict[str, str]:
    """The spawned server's environment: ours, then the benchmark's settings, then ``extra``."""
    return {
        **os.environ,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(grpc_port),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(http_port),
        "ENVIRONMENT": "production",
        "EVENTS_ENABLED": "true" if events else "false",
        **extra,
    }


def _serving(target: str) -> bool:
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def _wait_ready(server: SpawnedServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SpawnError(
                f"the server exited with status {server.process.returncode} before it was "
                f"ready:\n{server.stderr_tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=0.2):
                pass
        except OSError:
            time.sleep(0.05)
            continue
        if _serving(server.target):
            return
        time.sleep(0.05)
    raise SpawnError(f"the server was not ready within {READY_TIMEOUT_S:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def spawned_server(
    cores: tuple[int, ...], events: bool = False, extra_env: dict[str, str] | None = None
) -> Iterator[SpawnedServer]:
    """Start the server pinned to ``cores``; yield it once it is ready; stop it on exit."""
    if shutil.which("taskset") is None:
        raise SpawnError("--spawn needs taskset (Debian package util-linux)")
    grpc_port, http_port = free_port(), free_port()
    env = server_env(grpc_port, http_port, events, extra_env or {})
    command = ["taskset", "-c", ",".join(map(str, cores)), sys.executable, "-m", "paysim", "serve"]
    with tempfile.NamedTemporaryFile(prefix="paysim-bench-server-", suffix=".err") as stderr:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
        server = SpawnedServer(process, grpc_port, http_port, cores, stderr)
        try:
            _wait_ready(server)
            yield server
        finally:
            _stop(process)
