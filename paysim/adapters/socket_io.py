"""Sending and receiving on a plain TCP connection's socket directly.

Used by ``Http1Client`` (webhooks: ``send`` and ``receive``), by the gRPC
server's connections (the writer's ``send``, the reader's ``receive``) and by
``redis_wire`` (the store's batches: one write and one read each).

Why: ``trio.SocketStream`` makes every operation look like it blocked. Its
``send_all`` ends in a scheduler round trip even when the kernel took every
byte at once, and its ``receive_some`` first tries a ``recv`` that, for an
answer the server has not written yet, fails with ``BlockingIOError``, then
waits, then reads. A webhook is one small write and one read; a gRPC writer's
round is one write of whatever h2 has queued. Here the write is a plain
``os.write`` on the socket's descriptor (the stream's path only for what the
kernel did not take), and the read waits for readability first
(``trio.lowlevel.wait_readable``), then reads. Measured with the webhook
benchmark in the module's commit, and for the writer by counting task steps
per unary call (three in every ten were the writer's round trip).

What stays as it was: both are checkpoints for cancellation (``send`` checks
for a pending cancellation before it writes, ``receive`` waits in trio's I/O
manager, where a deadline or a closing socket wakes it); an ``OSError`` becomes
``trio.BrokenResourceError``, as ``SocketStream`` translates it (the client's
``_Stale`` rule reads that); a TLS connection, or any other stream, goes
through the stream. ``_RAW`` switches the direct path off (the tests run the
client's suite both ways).

The connection's stream owns the socket: nothing here closes it.
"""

from __future__ import annotations

import os

import trio

_RAW = True


def socket_fd(stream: trio.abc.Stream) -> int:
    """The descriptor to use directly for ``stream``, or -1: not a plain TCP stream."""
    if _RAW and type(stream) is trio.SocketStream:
        return stream.socket.fileno()
    return -1


async def send(stream: trio.abc.Stream, fd: int, data: bytes) -> None:
    """All of ``data``; see the module docstring."""
    if fd < 0:
        await stream.send_all(data)
        return
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        sent = os.write(fd, data)
    except BlockingIOError:
        sent = 0
    except OSError as exc:
        raise trio.BrokenResourceError(f"send: {exc.strerror or exc}") from exc
    if sent < len(data):
        await stream.send_all(memoryview(data)[sent:])  # the kernel's buffer was full


async def receive(stream: trio.abc.Stream, fd: int, max_bytes: int) -> bytes | bytearray:
    """The next bytes (b"" at EOF), after waiting for them; see the module docstring."""
    if fd < 0:
        return await stream.receive_some(max_bytes)
    return await _wait_and_read(fd, max_bytes)


async def _wait_and_read(fd: int, max_bytes: int) -> bytes:
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, max_bytes)
        except BlockingIOError:
            continue  # woken without data (it happens): wait again
        except OSError as exc:
            raise trio.BrokenResourceError(f"receive: {exc.strerror or exc}") from exc


async def receive_eager(stream: trio.abc.Stream, fd: int, max_bytes: int) -> bytes:
    """The next bytes (b"" at EOF): what is there already, else wait for them.

    For a reader whose peer often has more on the way (a gRPC client's frames
    arrive in several segments): ``os.read`` first, and only when that finds
    nothing, ``receive``'s wait. Like ``SocketStream.receive_some``, it yields
    to the scheduler after a read that found bytes at once, so a peer that
    always has more cannot starve other tasks; unlike it, no context managers,
    no ``BlockingIOError`` raised through trio's socket wrapper.
    """
    if fd < 0:
        data = await stream.receive_some(max_bytes)
        return data if isinstance(data, bytes) else bytes(data)
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        data = os.read(fd, max_bytes)
    except BlockingIOError:
        return await _wait_and_read(fd, max_bytes)
    except OSError as exc:
        raise trio.BrokenResourceError(f"receive: {exc.strerror or exc}") from exc
    await trio.lowlevel.cancel_shielded_checkpoint()
    return data


def readable(stream: trio.abc.Stream) -> bool:
    """Whether an idle connection's socket has something to read: EOF, most likely."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return isinstance(stream, trio.SocketStream) and stream.socket.is_readable()
