"""The child processes: pinned to a core, dying with this process, stopped in order."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator


def spawn(
    core: str, cmd: list[str], env: dict[str, str], *, nice: bool = False
) -> subprocess.Popen[bytes]:
    # taskset and nice exec the command: the pid is the command's own.
    prefix = ["taskset", "-c", core, *(["nice", "-n", "19"] if nice else [])]
    return subprocess.Popen(
        [*prefix, *cmd],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C reaches us only; we stop them in order
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if this process dies (even by SIGKILL)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started processes, stopped in reverse order however the block ends."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(Exception):
                stop(proc)
