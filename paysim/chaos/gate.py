"""A TCP service that can be switched off and on: the "down for a while" fault.

``Gate(handler)`` serves ``handler(stream)`` for every connection on one port.
``down()`` makes the service look like a host that went away: the listening
socket is closed, so new connections are *refused*, and every open connection
is *reset* (RST, not a polite FIN), so a client in the middle of a request
sees an error, as it would from a crashed process. ``up()`` listens again on
the same port. The webhook receiver and the EventBridge outage proxy both sit
behind one.

Resource handling: ``serve`` owns its listeners and every connection; when it
is cancelled, all of them are closed. ``reset(stream)`` is for a handler that
wants to reset its own connection (the "connection reset" fault).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio
from trio_util import AsyncBool

Handler = Callable[[trio.SocketStream], Awaitable[None]]

_REOPEN_ATTEMPTS = 50
_REOPEN_PAUSE_S = 0.05


def reset(stream: trio.SocketStream) -> None:
    """Close ``stream`` with an RST: SO_LINGER 0, then close. Never raises."""
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already closed
    stream.socket.close()


class Gate:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._open: set[trio.SocketStream] = set()
        # trio-util AsyncBools: down/up flip them; waiters wake on the change.
        self._up = AsyncBool(True)
        self._accepting: trio.CancelScope | None = None
        self._listening = AsyncBool(False)
        self.port = 0

    @property
    def is_up(self) -> bool:
        return bool(self._up.value)

    async def serve(
        self,
        host: str,
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Serve on ``host:port`` (0: any free port) forever; ``started(port)`` once listening."""
        started = False
        async with trio.open_nursery() as connections:
            while True:
                listeners = await self._listen(host, port)
                port = self.port = listeners[0].socket.getsockname()[1]
                self._listening.value = True
                with trio.CancelScope() as self._accepting:
                    if not started:
                        task_status.started(port)
                        started = True
                    await trio.serve_listeners(self._run, listeners, handler_nursery=connections)
                await self._up.wait_value(True)

    def down(self) -> None:
        """Stop listening (new connections are refused) and reset every open connection."""
        if not self._up.value:
            return
        self._up.value = False
        self._listening.value = False
        if self._accepting is not None:
            self._accepting.cancel()
        for stream in list(self._open):
            reset(stream)

    def up(self) -> None:
        self._up.value = True

    async def outage(self, seconds: float) -> None:
        """Down for ``seconds``, then up again (also when cancelled meanwhile).

        Returns once it listens again.
        """
        self.down()
        try:
            await trio.sleep(seconds)
        finally:
            self.up()
        await self._listening.wait_value(True)

    async def _listen(self, host: str, port: int) -> list[trio.SocketListener]:
        # Reopening the same port right after closing it: SO_REUSEADDR (trio sets
        # it) covers TIME_WAIT; a brief retry covers the kernel catching up.
        for _ in range(_REOPEN_ATTEMPTS - 1):
            try:
                return await trio.open_tcp_listeners(port, host=host)
            except OSError:
                if port == 0:
                    raise
                await trio.sleep(_REOPEN_PAUSE_S)
        return await trio.open_tcp_listeners(port, host=host)

    async def _run(self, stream: trio.SocketStream) -> None:
        if not self._up.value:  # accepted just as the gate went down
            reset(stream)
            return
        self._open.add(stream)
        try:
            await self._handler(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # reset by down(), or by the peer: both are part of the game
        finally:
            self._open.discard(stream)
            await trio.aclose_forcefully(stream)
