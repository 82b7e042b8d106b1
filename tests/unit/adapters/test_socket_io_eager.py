"""``socket_io.receive_eager``: what is there at once, else a wait; always a scheduling point."""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio

from paysim.adapters import socket_io


async def test_bytes_already_there_are_read_and_others_get_to_run() -> None:
    left, right = trio.socket.socketpair()
    with left, right:
        stream = trio.SocketStream(right)
        turns = 0

        async def other_task() -> None:
            nonlocal turns
            while True:
                turns += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            for _ in range(50):
                os.write(left.fileno(), b"ready")
                assert await socket_io.receive_eager(stream, right.fileno(), 1024) == b"ready"
            # A peer that always has more must not starve the other tasks.
            assert turns > 0
            nursery.cancel_scope.cancel()


async def test_it_waits_for_bytes_not_there_yet() -> None:
    left, right = trio.socket.socketpair()
    with left, right:
        stream = trio.SocketStream(right)

        async def write_later() -> None:
            await trio.sleep(0.01)
            os.write(left.fileno(), b"later")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_later)
            assert await socket_io.receive_eager(stream, right.fileno(), 1024) == b"later"


async def test_eof_is_empty() -> None:
    left, right = trio.socket.socketpair()
    with right:
        stream = trio.SocketStream(right)
        left.close()
        assert await socket_io.receive_eager(stream, right.fileno(), 1024) == b""


async def test_a_reset_is_a_broken_resource() -> None:
    listener = trio.socket.socket()
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = trio.socket.socket()
        with client:
            await client.connect(listener.getsockname())
            server, _ = await listener.accept()
            with server:
                # Close with an RST: the reader's next read fails with ECONNRESET.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                stream = trio.SocketStream(server)
                with pytest.raises(trio.BrokenResourceError):
                    await socket_io.receive_eager(stream, server.fileno(), 1024)


async def test_a_cancelled_reader_does_not_take_the_bytes() -> None:
    left, right = trio.socket.socketpair()
    with left, right:
        stream = trio.SocketStream(right)
        os.write(left.fileno(), b"kept")
        with trio.CancelScope() as scope:
            scope.cancel()
            await socket_io.receive_eager(stream, right.fileno(), 1024)
        assert scope.cancelled_caught
        assert await socket_io.receive_eager(stream, right.fileno(), 1024) == b"kept"


async def test_a_stream_without_a_descriptor_goes_through_the_stream() -> None:
    one, other = trio.testing.memory_stream_pair()
    await one.send_all(b"memory")
    assert await socket_io.receive_eager(other, -1, 1024) == b"memory"
