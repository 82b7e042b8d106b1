"""``paysim serve`` on a machine without AWS: it says so once, at start, naming
EVENTS_ENABLED=false, runs without events, and stops promptly (it used to log
an error on every PutEvents retry and take the whole grace period to stop)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import trio

from tests.e2e.test_app_lifecycle import CLI, ROOT, LineReader, cli_env
from tests.grpc_helpers import call, create_request, payment_stub


def no_aws_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in cli_env().items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(home),
        AWS_CONFIG_FILE=str(home / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        SHUTDOWN_GRACE_MS="20000",
    )
    return env


async def test_serve_without_credentials_says_so_once_and_stops_promptly(tmp_path: Path):
    proc = await trio.lowlevel.open_process(
        CLI,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=no_aws_env(tmp_path),
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        out = LineReader(proc.stdout)
        with trio.fail_after(20):
            ready = await out.until(lambda r: r.get("event") == "paysim serving")
        with payment_stub(ready["grpc_port"]) as stub:
            await call(stub.CreatePaymentIntent, create_request())  # a change to announce
        sent = trio.current_time()
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            records = await out.rest()
            await proc.wait()
        stop_s = trio.current_time() - sent
        stderr = await proc.stderr.receive_some(65536)
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
    assert proc.returncode == 0, stderr
    about_aws = [r for r in records if "credentials" in r["event"].lower()]
    assert len(about_aws) == 1, about_aws
    assert about_aws[0]["level"] == "warning"
    assert "EVENTS_ENABLED=false" in about_aws[0]["hint"]
    assert records.index(about_aws[0]) < [r["event"] for r in records].index("paysim serving")
    assert not [r for r in records if r["level"] == "error"]
    # the drain delay (1 s) and the payment's 2 s delay at most, not the 20 s grace
    assert stop_s < 5, stop_s
