"""Listening sockets that several processes share (``paysim serve --workers``).

``reserve_ports`` (in the supervisor) turns the configured ports into
concrete ones before any worker starts, and holds those that were 0;
``open_shared_listeners`` (in each worker) binds them with SO_REUSEPORT, so
the kernel spreads new connections over the workers. Policy: a port held by
anything else, or the gRPC and HTTP ports being one, fails with EADDRINUSE:
workers never share a port with strangers silently.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

import trio

_BACKLOG = 0xFFFF  # the kernel caps it at net.core.somaxconn, as trio's default does


class PortInUseError(OSError):
    """EADDRINUSE for one port: ``port`` says which, so the message can name it."""

    def __init__(self, port: int) -> None:
        super().__init__(errno.EADDRINUSE, "address already in use")
        self.port = port


def _name_the_port(error: OSError, port: int) -> OSError:
    """``error`` as a PortInUseError when it is EADDRINUSE, else unchanged."""
    if error.errno == errno.EADDRINUSE and not isinstance(error, PortInUseError):
        named = PortInUseError(port)
        named.__cause__ = error
        return named
    return error


def _bind_all(
    host: str | None, port: int, *, reuse_address: bool, reuse_port: bool
) -> list[socket.socket]:
    """One bound (not listening) socket for every address ``host`` resolves to.

    ``host`` None or "" is every interface, IPv4 and IPv6 (IPV6_V6ONLY, as trio
    does). With ``port`` 0 the first socket picks the port and the others bind
    the same number. Address families the system lacks are skipped.
    """
    addresses = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, type_, proto, _, sockaddr in addresses:
            try:
                sock = socket.socket(family, type_, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:
                    continue
                raise
            sockets.append(sock)
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                sockaddr = (sockaddr[0], sockets[0].getsockname()[1], *sockaddr[2:])
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                raise _name_the_port(exc, port) from exc
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(errno.EAFNOSUPPORT, f"no usable address family for {host!r}")
    return sockets


def reserve_ports(
    endpoints: Sequence[tuple[str, int]],
) -> tuple[list[int], list[socket.socket]]:
    """The concrete port of each ``(host, port)``, and the sockets that hold the 0s.

    Raises OSError(EADDRINUSE) when a port is held by anything, or when two
    endpoints name the same port. The caller closes the returned sockets when
    no child will start any more.
    """
    ports: list[int] = []
    checks: list[socket.socket] = []
    try:
        for host, port in endpoints:
            bound = _bind_all(host, port, reuse_address=True, reuse_port=False)
            checks += bound
            for sock in bound:
                # Listening for a moment: two sockets that are merely bound with
                # SO_REUSEADDR may share a port, so without this the gRPC and HTTP
                # ports could be one (and every worker would serve both on it).
                try:
                    sock.listen(1)
                except OSError as exc:
                    raise _name_the_port(exc, port) from exc
            ports.append(bound[0].getsockname()[1])
    finally:
        for sock in checks:
            sock.close()
    held: list[socket.socket] = []
    try:
        for (host, configured), port in zip(endpoints, ports, strict=True):
            if configured == 0:
                # SO_REUSEPORT alone: the children (same user, same option) may
                # bind it too; a plain bind, even with SO_REUSEADDR, may not.
                held += _bind_all(host, port, reuse_address=False, reuse_port=True)
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return ports, held


async def open_listeners(
    host: str | None, port: int, *, reuse_port: bool
) -> list[trio.SocketListener]:
    """A server's listeners on ``host:port``: ``trio.open_tcp_listeners``, or with
    ``reuse_port`` (``paysim serve --workers`` only) ``open_shared_listeners``.

    Without ``reuse_port`` a taken port raises PortInUseError (an OSError with
    errno EADDRINUSE and the ``port``): no sharing.
    """
    if reuse_port:
        return await open_shared_listeners(host, port)
    try:
        return await trio.open_tcp_listeners(port, host=host or None)
    except OSError as exc:
        raise _name_the_port(exc, port) from exc


async def open_shared_listeners(host: str | None, port: int) -> list[trio.SocketListener]:
    """``trio.open_tcp_listeners``, plus SO_REUSEPORT: the listeners of one worker.

    One listener for every address ``host`` resolves to (None or "": every
    interface), bound with SO_REUSEADDR (as trio does) and SO_REUSEPORT, so that
    the other workers (same user, same options) bind the same port and the
    kernel spreads connections over all of them. Any other holder of the port
    still makes this fail with EADDRINUSE. With ``port`` 0 (tests) every worker
    would get a port of its own: the supervisor passes concrete ports. The
    caller owns the listeners.
    """
    sockets = await trio.to_thread.run_sync(
        lambda: _bind_all(host, port, reuse_address=True, reuse_port=True)
    )
    try:
        for sock in sockets:
            sock.listen(_BACKLOG)
        return [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
