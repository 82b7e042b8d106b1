"""One Redis connection spoken directly on a trio stream: the batch sender's path.

Theory of operation
-------------------
The batch sender (``redis_batch``) has exactly one command on the wire at a
time, so it needs no multiplexing: ``RedisWire.call`` writes the command and
reads its one reply, in the caller's task. coredis, built for many concurrent
callers, spends about 200 µs of CPU per command on what that needs (a writer
task, a reader task with a deadline per read, an event per request, retry and
telemetry wrappers); this costs a quarter of it (measured with one EVALSHA in a
loop on loopback). coredis still serves the store's other calls (the start
check, ``maintain``, ``hand_over``), which are few.

The protocol is RESP2 (no ``HELLO``): a command is an array of bulk strings; a
reply is a simple string, an error, an integer, a bulk string (``None`` for
nil) or an array of replies (``None`` for a nil array). Bulk strings come back
as ``bytes``, as coredis returns them with ``decode_responses=False``.

A plain TCP connection is written and read on its socket directly
(``socket_io``: no scheduler round trip after a write the kernel took
whole, no failed read before the reply is there); TLS goes through its stream.

Connecting is lazy: the first call opens the stream (TLS for ``rediss://``,
checking the certificate against STORE_TLS_CA_FILE or the system's), sends
``AUTH`` if there is a password and ``SELECT`` if the database is not 0.

Bounds (what a server, or whatever answers at STORE_URL, can make us hold):
a reply may be at most ``max_reply_bytes`` (``MAX_REPLY_BYTES``, 1 GiB,
twice the largest string Redis stores), whether its bulk string announces
more or its bytes simply keep coming, and may nest arrays at most
``MAX_DEPTH`` deep (paysim's replies nest two). Either is a ``WireError`` the
moment it is seen, and the connection is dropped.

Errors: a call that fails or is cancelled half way leaves the stream out of
step (a reply may still come), so the connection is dropped and the next call
opens a new one. An error reply raises ``ReplyError``, or ``UnreachableReply``
when it says the server cannot serve now (still loading, read-only replica,
authentication refused, ...); a reply that is not RESP raises ``WireError``, a
``ConnectionError``. Neither message carries data or credentials.

``evalsha`` runs a script by its digest and, if the server does not have it
(``NOSCRIPT``: a restarted or flushed server), sends the script itself once.

Owned by ``RedisStore``; ``aclose`` (by ``open_redis_store``) closes the stream.
"""

from __future__ import annotations

import hashlib
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

import trio

from paysim.adapters import socket_io
from paysim.config import StoreSettings

# Error codes (the reply's first word) that say "not now", not "wrong request".
UNREACHABLE_CODES = frozenset(
    {"LOADING", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "NOAUTH", "WRONGPASS"}
)
_RECEIVE = 65_536
MAX_REPLY_BYTES = 1 << 30
MAX_DEPTH = 8

Arg = str | bytes | int


class ReplyError(Exception):
    """Redis answered with an error; ``code`` is its first word (``ERR``, ``NOSCRIPT``...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message[:200])
        self.code = message.split(" ", 1)[0]


class UnreachableReply(ReplyError):
    """An error reply that means the server cannot serve now (see ``UNREACHABLE_CODES``)."""


class WireError(ConnectionError):
    """The server's bytes are not a RESP reply."""


class _Incomplete(Exception):
    """The buffer ends before the reply does."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, from ``StoreSettings``."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> Endpoint:
        assert settings.url is not None
        parts = urllib.parse.urlsplit(settings.url)
        password = settings.password
        if password is None and parts.password:
            password = urllib.parse.unquote(parts.password)
        tls = None
        if parts.scheme == "rediss":
            tls = ssl.create_default_context(cafile=settings.tls_ca_file)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int(parts.path.lstrip("/") or 0),
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=password,
            tls=tls,
        )


def pack_command(args: tuple[Arg, ...]) -> bytes:
    """The command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = b"%d" % arg
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


def parse_reply(
    buf: bytes, pos: int = 0, *, max_bytes: int = MAX_REPLY_BYTES, depth: int = 0
) -> tuple[Any, int]:
    """One reply starting at ``pos``, and where it ends; ``_Incomplete`` if it does not.

    ``WireError`` for a bulk string longer than ``max_bytes`` (before its bytes
    arrive) and for arrays nested deeper than ``MAX_DEPTH``.
    """
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos : pos + 1]
    line = buf[pos + 1 : end]
    try:
        if kind == b":":
            return int(line), end + 2
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, end + 2
            if size > max_bytes:
                raise WireError(f"reply from the store larger than {max_bytes} bytes")
            stop = end + 2 + size
            if len(buf) < stop + 2:
                raise _Incomplete
            return buf[end + 2 : stop], stop + 2
        if kind == b"*":
            count = int(line)
            if count < 0:
                return None, end + 2
            if depth >= MAX_DEPTH:
                raise WireError(f"reply from the store nests deeper than {MAX_DEPTH}")
            items = []
            pos = end + 2
            for _ in range(count):
                item, pos = parse_reply(buf, pos, max_bytes=max_bytes, depth=depth + 1)
                items.append(item)
            return items, pos
    except ValueError:
        raise WireError("malformed reply from the store") from None
    if kind == b"+":
        return line, end + 2
    if kind == b"-":
        message = line.decode("utf-8", "replace")
        code = message.split(" ", 1)[0]
        error = UnreachableReply if code in UNREACHABLE_CODES else ReplyError
        return error(message), end + 2
    raise WireError("unexpected reply from the store")


class RedisWire:
    """One connection, one command at a time (the caller makes sure of that)."""

    def __init__(self, endpoint: Endpoint, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self._endpoint = endpoint
        self._max_reply = max_reply_bytes
        self._stream: trio.abc.Stream | None = None
        self._fd = -1  # the stream's socket, written and read directly (socket_io)
        self._buffer = b""

    async def call(self, *args: Arg) -> Any:
        """Send one command and return its reply; raises its error reply."""
        reply = await self._round_trip(pack_command(args))
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def evalsha(self, script: str, keys: list[str], args: list[Arg]) -> Any:
        """Run ``script`` by its digest; sent in full once if the server lacks it."""
        digest = _digest(script)
        try:
            return await self.call(b"EVALSHA", digest, len(keys), *keys, *args)
        except ReplyError as exc:
            if exc.code != "NOSCRIPT":
                raise
        return await self.call(b"EVAL", script, len(keys), *keys, *args)

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        self._fd = -1
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def _round_trip(self, command: bytes) -> Any:
        try:
            if self._stream is None:
                self._stream = await self._connect()
                self._fd = socket_io.socket_fd(self._stream)
            await socket_io.send(self._stream, self._fd, command)
            return await self._reply(self._stream, self._fd)
        except BaseException:
            # Out of step now (a reply may still arrive): never reuse this connection.
            await self.aclose()
            raise

    async def _reply(self, stream: trio.abc.Stream, fd: int = -1) -> Any:
        buf = self._buffer
        while True:
            # A complete reply ends with CRLF: parse only then (a long reply arrives
            # in many pieces, and each parse starts from its beginning).
            if buf.endswith(b"\r\n"):
                try:
                    reply, end = parse_reply(buf, max_bytes=self._max_reply)
                except _Incomplete:
                    pass
                else:
                    self._buffer = buf[end:]
                    return reply
            if len(buf) > self._max_reply:
                raise WireError(f"reply from the store larger than {self._max_reply} bytes")
            data = await socket_io.receive(stream, fd, max(_RECEIVE, len(buf)))
            if not data:
                raise EOFError("the store closed the connection")
            buf += data

    async def _connect(self) -> trio.abc.Stream:
        ep = self._endpoint
        self._buffer = b""
        stream: trio.abc.Stream = await trio.open_tcp_stream(ep.host, ep.port)
        try:
            if ep.tls is not None:
                tls = trio.SSLStream(stream, ep.tls, server_hostname=ep.host)
                await tls.do_handshake()
                stream = tls
            if ep.password is not None:
                auth: tuple[Arg, ...] = ("AUTH", ep.password)
                if ep.username is not None:
                    auth = ("AUTH", ep.username, ep.password)
                await self._handshake(stream, auth)
            if ep.db:
                await self._handshake(stream, ("SELECT", ep.db))
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    async def _handshake(self, stream: trio.abc.Stream, command: tuple[Arg, ...]) -> None:
        await stream.send_all(pack_command(command))
        reply = await self._reply(stream)
        if isinstance(reply, ReplyError):
            # Refused credentials or database: the store cannot be used as configured.
            name = "AUTH" if command[0] == "AUTH" else "SELECT"
            raise UnreachableReply(f"{name} refused: {reply.code}")


class WireScript:
    """A script run on a ``RedisWire``, called as a coredis ``Script`` is (``redis_batch``)."""

    def __init__(self, wire: RedisWire, script: str) -> None:
        self._wire = wire
        self._script = script

    async def __call__(self, *, keys: list[str], args: list[Arg]) -> Any:
        return await self._wire.evalsha(self._script, keys, args)


_DIGESTS: dict[str, str] = {}


def _digest(script: str) -> str:
    digest = _DIGESTS.get(script)
    if digest is None:
        digest = _DIGESTS[script] = hashlib.sha1(script.encode()).hexdigest()
    return digest
