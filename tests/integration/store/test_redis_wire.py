"""``redis_wire`` against a real ``redis-server``: scripts, reconnection, handshake."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest
import trio

from paysim.adapters.redis_batch import classify
from paysim.adapters.redis_wire import (
    Endpoint,
    RedisWire,
    ReplyError,
    UnreachableReply,
    WireError,
)
from paysim.config import StoreSettings
from tests.redis_fixtures import RedisProcess, redis_server, start_redis  # noqa: F401 - fixture

ECHO = "return {ARGV[1], tonumber(ARGV[2]) + 1, false, {KEYS[1]}}"


def wire_for(server: RedisProcess, **settings: object) -> RedisWire:
    base = StoreSettings(url=server.url)
    return RedisWire(Endpoint.from_settings(dataclasses.replace(base, **settings)))  # type: ignore[arg-type]


async def test_a_script_runs_and_is_sent_again_after_the_server_forgot_it(
    redis_server: RedisProcess,  # noqa: F811 - fixture
) -> None:
    wire = wire_for(redis_server)
    try:
        assert await wire.evalsha(ECHO, ["{k}"], [b"a\x00b", 41]) == [b"a\x00b", 42, None, [b"{k}"]]
        assert await wire.call("SCRIPT", "FLUSH") == b"OK"
        assert await wire.evalsha(ECHO, ["{k}"], ["x", 1]) == [b"x", 2, None, [b"{k}"]]
        with pytest.raises(ReplyError) as raised:
            await wire.evalsha("return redis.error_reply('paysim: no')", [], [])
        assert raised.value.code == "paysim:"
        assert not classify(raised.value)
        assert await wire.call("PING") == b"PONG"  # still in step after an error reply
    finally:
        await wire.aclose()


async def test_a_call_cancelled_half_way_drops_its_connection(
    redis_server: RedisProcess,  # noqa: F811 - fixture
) -> None:
    wire = wire_for(redis_server)
    try:
        first = await wire.call("CLIENT", "ID")
        with trio.move_on_after(0.05):
            await wire.call("BLPOP", "{nothing}", "5")  # blocks on the server
        # A reply to the BLPOP could still come: the next call is on a new connection.
        second = await wire.call("CLIENT", "ID")
        assert second != first
        assert await wire.call("CLIENT", "ID") == second  # and keeps it
    finally:
        await wire.aclose()


async def test_a_database_is_selected_and_a_password_sent(tmp_path: Path) -> None:
    server = start_redis(tmp_path, password="pw")
    wire = wire_for(server, url=f"redis://127.0.0.1:{server.port}/3", password="pw")
    wrong = wire_for(server, password="nope")
    try:
        assert b" db=3 " in await wire.call("CLIENT", "INFO")
        with pytest.raises(UnreachableReply, match="AUTH refused: WRONGPASS") as raised:
            await wrong.call("PING")
        assert classify(raised.value)  # refused credentials: the store is unreachable
    finally:
        await wire.aclose()
        await wrong.aclose()
        server.stop()


async def _failure(wire: RedisWire) -> BaseException:
    try:
        await wire.call("PING")
    except Exception as exc:  # what it is, is what the test checks
        return exc
    raise AssertionError("PING answered")


async def test_a_server_that_went_away_is_an_outage_and_a_new_one_is_found(
    tmp_path: Path,
) -> None:
    server = start_redis(tmp_path, durable=True)
    wire = wire_for(server)
    try:
        assert await wire.call("PING") == b"PONG"
        server.kill()
        lost = await _failure(wire)
        assert classify(lost)  # the connection lost: an outage
        refused = await _failure(wire)
        assert isinstance(refused, OSError)  # nothing listens
        assert classify(refused)
        server.restart()
        assert await wire.call("PING") == b"PONG"
    finally:
        await wire.aclose()
        server.stop()


# -- a server that answers what no Redis would: bounded, over a real socket -------


async def _rogue_store(
    nursery: trio.Nursery, answer: bytes, repeat: int, closed: trio.Event
) -> Endpoint:
    """A TCP server that answers the first command with ``answer`` ``repeat`` times,
    then reads until the client hangs up (``closed``)."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await stream.receive_some(65_536)
            for _ in range(repeat):
                await stream.send_all(answer)
            while await stream.receive_some(65_536):
                pass
        except trio.BrokenResourceError:
            pass
        finally:
            closed.set()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    return Endpoint.from_settings(StoreSettings(url=f"redis://127.0.0.1:{port}"))


@pytest.mark.parametrize(
    ("answer", "repeat", "reason"),
    [
        # A bulk string that announces more than the bound: refused before its bytes.
        (b"$5000000000\r\n", 1, "larger than"),
        # A simple string that never ends: refused once the bound is passed.
        (b"+" + b"x" * 16_384, 64, "larger than"),
        # Arrays in arrays, far deeper than any reply of paysim's.
        (b"*1\r\n" * 100 + b":1\r\n", 1, "nests deeper"),
    ],
)
async def test_a_reply_past_the_bounds_is_a_wire_error_and_drops_the_connection(
    nursery: trio.Nursery, answer: bytes, repeat: int, reason: str
) -> None:
    closed = trio.Event()
    wire = RedisWire(await _rogue_store(nursery, answer, repeat, closed), max_reply_bytes=65_536)
    with trio.fail_after(5):
        with pytest.raises(WireError, match=reason):
            await wire.call("PING")
        await closed.wait()  # the client hung up: nothing more is read or held
    assert classify(WireError("x"))  # the batcher takes it for an outage and backs off
