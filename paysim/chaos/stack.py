"""The processes a chaos run starts: moto's server (as EventBridge and SQS) and ``paysim serve``.

Both are children in their own session (a Ctrl-C reaches this process only,
which stops them in order). ``child`` always stops what it started: SIGTERM,
then SIGKILL after a while. (No ``PR_SET_PDEATHSIG`` as in the delivery
benchmark: trio forks from a worker thread, and the kernel sends that signal
when the *thread* that forked exits, which trio's idle threads do after 10 s.)

The server is started as the platform would run it, ``python -m paysim
serve``, on port 0 with JSON logs; its ports are read from its "paysim
serving" log line (as tests/e2e/test_drain.py does). ``ServerLog`` keeps every
line except the per-RPC ones, so the shutdown report ("unresolved payments at
shutdown", "undelivered webhooks at shutdown", ...) can be checked after a
SIGTERM. AWS credentials given to moto and the server are throw-away values
for this process tree only (moto accepts anything); nothing here reads real
ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from trio_util import AsyncValue

from paysim.adapters.aws import (
    ClientTuning,
    ResourceNames,
    Resources,
    ensure_resources,
    make_client,
)
from paysim.config import AwsSettings
from paysim.devstack import DEV_CREDENTIALS
from paysim.loadgen.ports import wait_port_open
from paysim.loadgen.scrape import scrape
from paysim.loadgen.spawn import free_port

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient

STOP_TIMEOUT_S = 15.0
_STDERR_KEEP = 64 * 1024
_RPC_LINE = b'"event":"rpc"'  # a compact JSON line (paysim.observability.render)


@contextlib.asynccontextmanager
async def child(
    cmd: list[str], env: Mapping[str, str], *, capture: bool = False
) -> AsyncIterator[trio.Process]:
    """Run ``cmd``; on exit stop it (SIGTERM, then SIGKILL) if it is still running."""
    pipe = subprocess.PIPE if capture else subprocess.DEVNULL
    process = await trio.lowlevel.open_process(
        cmd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=pipe,
        stderr=pipe,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with trio.move_on_after(STOP_TIMEOUT_S):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def aws_env(region: str) -> dict[str, str]:
    """This process's environment with throw-away credentials, for moto and its clients."""
    env = {**os.environ, **DEV_CREDENTIALS, "AWS_REGION": region, "AWS_DEFAULT_REGION": region}
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        env.pop(name, None)
    return env


@contextlib.asynccontextmanager
async def moto_server(region: str) -> AsyncIterator[tuple[str, int]]:
    """moto's server on a free loopback port; yields its endpoint URL and its pid."""
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    async with child(cmd, aws_env(region)) as process:
        await wait_port_open(port)
        yield f"http://127.0.0.1:{port}", process.pid


async def moto_resources(endpoint: str, aws: AwsSettings, run_id: str) -> tuple[Any, Resources]:
    """The CONTRACT §4 resources under names unique to this run; (SQS client, resources)."""
    os.environ.update(DEV_CREDENTIALS)  # this process talks to moto only
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)
    events, sqs = await trio.to_thread.run_sync(_clients, endpoint, aws)
    resources = await ensure_resources(
        events,
        sqs,
        aws,
        names=ResourceNames(
            queue=f"paysim-chaos-{run_id}",
            dlq=f"paysim-chaos-{run_id}-dlq",
            rule=f"paysim-chaos-{run_id}",
        ),
    )
    return sqs, resources


def _clients(endpoint: str, aws: AwsSettings) -> tuple[EventBridgeClient, SQSClient]:
    events = make_client("events", aws, endpoint)
    return events, make_client("sqs", aws, endpoint, tuning=ClientTuning(max_pool_connections=16))


@dataclass
class ServerLog:
    """The server's JSON log lines, except the one-per-RPC ones (counted only)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rpc_lines: int = 0
    stderr: bytearray = field(default_factory=bytearray)
    # trio-util: how many chunks were read, bumped per chunk; waiters test the records.
    chunks: AsyncValue = field(default_factory=lambda: AsyncValue(0))
    ended: trio.Event = field(default_factory=trio.Event)

    async def read(self, stream: trio.abc.ReceiveStream) -> None:
        buf = b""
        try:
            while chunk := await stream.receive_some(65536):
                *lines, buf = (buf + chunk).split(b"\n")
                for line in lines:
                    self._line(line)
                self.chunks.value += 1
        finally:
            self.ended.set()
            self.chunks.value += 1

    async def read_stderr(self, stream: trio.abc.ReceiveStream) -> None:
        while chunk := await stream.receive_some(65536):
            self.stderr += chunk
            del self.stderr[:-_STDERR_KEEP]

    def _line(self, line: bytes) -> None:
        if _RPC_LINE in line:
            self.rpc_lines += 1
            return
        try:
            record = json.loads(line)
        except ValueError:
            return
        if isinstance(record, dict):
            self.records.append(record)

    def first(self, event: str) -> dict[str, Any] | None:
        return next((r for r in self.records if r.get("event") == event), None)

    def ids_in(self, event: str) -> list[str]:
        return sorted(
            {i for r in self.records if r.get("event") == event for i in r["payment_ids"]}
        )

    def count(self, level: str) -> int:
        return sum(1 for r in self.records if r.get("level") == level)

    async def wait_for(self, event: str, timeout_s: float) -> dict[str, Any]:
        with trio.fail_after(timeout_s):
            while (record := self.first(event)) is None:
                if self.ended.is_set():
                    tail = bytes(self.stderr[-2000:]).decode(errors="replace")
                    raise RuntimeError(f"the server exited before {event!r}:\n{tail}")
                await self.chunks.wait_transition()
        return record


@dataclass
class ServerProcess:
    process: trio.Process
    log: ServerLog
    grpc_port: int
    http_port: int

    async def metrics(self) -> dict[str, float]:
        """Every sample on its /metrics; {} when it cannot be read (e.g. it has stopped)."""
        try:
            return await trio.to_thread.run_sync(scrape, self.http_port)
        except OSError:
            return {}


@contextlib.asynccontextmanager
async def paysim_server(env: Mapping[str, str]) -> AsyncIterator[ServerProcess]:
    """``python -m paysim serve`` with ``env``; yields once it serves."""
    cmd = [sys.executable, "-m", "paysim", "serve"]
    async with child(cmd, env, capture=True) as process, trio.open_nursery() as readers:
        assert process.stdout is not None
        assert process.stderr is not None
        log = ServerLog()
        readers.start_soon(log.read, process.stdout)
        readers.start_soon(log.read_stderr, process.stderr)
        try:
            serving = await log.wait_for("paysim serving", 30.0)
            yield ServerProcess(process, log, int(serving["grpc_port"]), int(serving["http_port"]))
        finally:
            readers.cancel_scope.cancel()  # before ``child`` stops the process
