"""A real ``redis-server`` for the tests, on a free port, in a temporary directory.

``redis_server`` (session scope) starts one process and stops it after the
session; each test isolates itself with its own key prefix (``redis_settings``)
so tests never share state. ``start_redis`` starts more (with a password, or one
a test may kill); ``durable=True`` keeps every write in an append-only file,
so ``kill`` then ``restart`` (same port, same data) is an outage, not a loss.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from paysim.config import StoreSettings
from paysim.loadgen.spawn import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class RedisProcess:
    port: int
    process: subprocess.Popen[bytes]
    password: str | None = None
    args: tuple[str, ...] = ()  # to start it again on the same port
    tls_cert: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL: gone at once, as in a crash."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def restart(self) -> None:
        """Start it again on the same port (with its data, if durable)."""
        assert self.process.poll() is not None, "still running"
        deadline = time.monotonic() + 10
        while True:  # the old socket may linger a moment
            process = subprocess.Popen(
                self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if _wait_answering(process, self.port, self.tls_cert):
                self.process = process
                return
            process.kill()
            process.wait()
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not restart")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(
    directory: Path,
    *extra: str,
    password: str | None = None,
    tls: tuple[Path, Path] | None = None,
    durable: bool = False,
) -> RedisProcess:
    """Start ``redis-server`` on a free port; return once it accepts connections.

    ``tls`` (certificate, key): the port speaks TLS only. ``durable``: every
    write goes to the append-only file before Redis answers it, so a SIGKILLed
    server restarted in ``directory`` has everything it acknowledged.
    """
    for _ in range(5):
        port = free_port()
        args = [REDIS_SERVER, "--bind", "127.0.0.1", "--save", ""]
        if tls is None:
            args += ["--port", str(port)]
        else:
            args += ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
            args += ["--tls-cert-file", str(tls[0]), "--tls-key-file", str(tls[1])]
        if durable:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        args += ["--dir", str(directory), *extra]
        if password is not None:
            args += ["--requirepass", password]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cert = tls[0] if tls is not None else None
        if _wait_answering(process, port, cert):
            return RedisProcess(port, process, password, tuple(args), cert)
        process.kill()
        process.wait()
    raise RuntimeError("redis-server did not start")


def _wait_answering(process: subprocess.Popen[bytes], port: int, cert: Path | None) -> bool:
    """True once the server on ``port`` answers PING (or asks for AUTH); False if it died."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
                conn = raw
                if cert is not None:
                    context = ssl.create_default_context(cafile=str(cert))
                    conn = context.wrap_socket(raw, server_hostname="localhost")
                conn.sendall(b"PING\r\n")
                reply = conn.recv(64)
            if reply.startswith((b"+PONG", b"-NOAUTH")):
                return True
        except OSError:
            pass
        time.sleep(0.02)  # a real process starting: nothing to wait on but the socket
    return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_settings(redis_server: RedisProcess) -> StoreSettings:
    """Store settings on the session's server, under a key prefix of this test's own."""
    return StoreSettings(
        url=redis_server.url,
        key_prefix=f"t{uuid.uuid4().hex[:12]}",
        replica_id="replica-a",
        timeout_s=5.0,
    )
