"""Waiting for a spawned server's port on loopback: blocking, and under trio.

The benchmarks and ``paysim chaos`` start servers as child processes and must
know when one listens. ``wait_port`` blocks (plain scripts); ``wait_port_open``
is its trio twin. Both only connect and close: they never send a byte.
"""

from __future__ import annotations

import socket
import time

import trio


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Block until 127.0.0.1:``port`` accepts a connection; SystemExit after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server did not open port {port} within {timeout:.0f} s")


async def wait_port_open(port: int, timeout_s: float = 30.0) -> None:
    """Until 127.0.0.1:``port`` accepts a connection; trio.TooSlowError after ``timeout_s``."""
    # Another process's port: a poll (nothing here to wait on, so no trio-util AsyncValue).
    with trio.fail_after(timeout_s):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.1)
            else:
                await stream.aclose()
                return
