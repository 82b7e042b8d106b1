"""gRPC over HTTP/2, server side, sans I/O: h2 events in, gRPC events out.

paysim's transport (``transport.py``) owns the socket and the calls; this layer
turns bytes into purerpc's event types (``RequestReceived`` is what handlers
receive) and never raises for one bad stream. It replaces purerpc 0.8.0's
``GRPCConnection``, whose faults tore down whole connections:

* every request header is checked here, and a bad one fails only its stream
  with the status grpc-go gives: a content type that is not gRPC gets HTTP 415
  (the spec's SHOULD) with INTERNAL; a codec other than protobuf
  (``application/grpc+json``) UNIMPLEMENTED; a ``grpc-timeout`` that is not 1
  to 8 digits and a unit INTERNAL; an unknown ``grpc-encoding`` UNIMPLEMENTED;
  anything else malformed INTERNAL;
* request trailers (HEADERS after the body) just end the request;
* a header list that parsed once is not parsed again while the connection's
  small cache holds it (clients send the same list for every call);
* messages come out of a bounded ``MessageReader``; a message that fails fails
  its stream, and every byte the stream held goes back into the connection's
  window, whether the stream failed, finished early or was reset;
* flow control: a stream's window fits one largest message, the connection's
  ``connection_window`` bytes; the transport acknowledges a message's bytes when
  its handler has taken it, so what a connection buffers is bounded by its window.

The failures come out as ``StreamFailed`` events, next to purerpc's own events.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.events
import h2.settings
import trio
from h2.settings import SettingCodes
from h2.windows import WindowManager
from purerpc.grpclib.events import (
    Event,
    MessageReceived,
    RequestEnded,
    RequestReceived,
    WindowUpdated,
)
from purerpc.grpclib.headers import HeaderDict
from purerpc.grpclib.status import Status, StatusCode

from paysim.entrypoints.grpc.h2_guard import FrameLimits, GuardedH2Connection
from paysim.entrypoints.grpc.hpack_cache import CachingEncoder
from paysim.entrypoints.grpc.messages import (
    ACCEPT_ENCODING,
    SUPPORTED_ENCODINGS,
    MessageError,
    MessageReader,
    unsupported_encoding,
)

__all__ = [
    "ACCEPT_ENCODING",
    "ConnectionLimits",
    "ServerConnection",
    "StreamFailed",
    "StreamReset",
]

_DEFAULT_WINDOW = 65_535  # RFC 9113 §6.9.2: every window starts here
_TIMEOUT = re.compile(r"[0-9]{1,8}[HMSmun]")
_CONTENT_TYPE = re.compile(r"application/grpc(?:\+([a-z0-9._-]+))?\s*(?:;.*)?", re.I | re.S)


_REQUEST_CACHE_LIMIT = 32  # header lists per connection; a full cache starts over


def _copy_request(template: RequestReceived, stream_id: int) -> RequestReceived:
    """A stream's own ``RequestReceived`` from a parsed one (its values are immutable
    but for the accept-encoding list, which is copied)."""
    request: RequestReceived = RequestReceived.__new__(RequestReceived)
    request.__dict__.update(template.__dict__)
    request.stream_id = stream_id
    if template.message_accept_encoding is not None:
        request.message_accept_encoding = list(template.message_accept_encoding)
    return request


class StreamFailed(Event):  # type: ignore[misc]
    """One stream cannot go on; answer it with ``status`` and forget it."""

    def __init__(self, stream_id: int, status: Status, http_status: int = 200) -> None:
        self.stream_id = stream_id
        self.status = status
        self.http_status = http_status


class StreamReset(Event):  # type: ignore[misc]
    """The peer reset the stream (RST_STREAM): its call must be cancelled."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


def _header_problem(headers: HeaderDict) -> StreamFailed | None:
    """The first request header a gRPC server must refuse, as a failure (stream id 0)."""
    content_type = headers.get("content-type")
    match = _CONTENT_TYPE.fullmatch(content_type) if isinstance(content_type, str) else None
    if match is None:
        return StreamFailed(
            0,
            Status(
                StatusCode.INTERNAL,
                "content-type must be application/grpc or application/grpc+proto",
            ),
            http_status=415,
        )
    subtype = match.group(1)
    if subtype is not None and subtype.lower() != "proto":
        return StreamFailed(
            0,
            Status(
                StatusCode.UNIMPLEMENTED,
                f"content-subtype {subtype!r} is not supported; use application/grpc+proto",
            ),
        )
    timeout = headers.get("grpc-timeout")
    if timeout is not None and not (isinstance(timeout, str) and _TIMEOUT.fullmatch(timeout)):
        return StreamFailed(
            0,
            Status(
                StatusCode.INTERNAL,
                "malformed grpc-timeout: 1 to 8 digits and a unit (H, M, S, m, u or n)",
            ),
        )
    encoding = headers.get("grpc-encoding")
    if encoding is not None and encoding not in SUPPORTED_ENCODINGS:
        return StreamFailed(0, unsupported_encoding(str(encoding)[:32]))
    return None


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection's peer may send: HTTP/2 settings and frame limits.

    ``connection_window=None``: room for two largest messages.
    """

    max_message_length: int
    max_concurrent_streams: int = 256
    max_header_list_size: int = 16_384
    connection_window: int | None = None
    frames: FrameLimits = field(default_factory=FrameLimits)


class ServerConnection:
    """Server side of one HTTP/2 connection; never raises for a single bad stream."""

    def __init__(
        self,
        limits: ConnectionLimits,
        constant_headers: Sequence[Sequence[tuple[str, str]]] = (),
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.max_message_length = limits.max_message_length
        frames = limits.frames
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        # Outbound headers are ours and well-formed: skip h2's per-header checks.
        # Inbound headers are checked here (``_header_problem``) and by purerpc's
        # parser; h2's framing and HPACK checks still apply.
        config.validate_outbound_headers = False
        config.normalize_outbound_headers = False
        config.validate_inbound_headers = False
        config.normalize_inbound_headers = False
        h2c = GuardedH2Connection(config, frames, clock)
        self.h2_connection = h2c
        # One largest message (with its prefix and some padding) fits a stream's window.
        self.stream_window = min(limits.max_message_length + 5 + 1024, 2**31 - 1)
        self.connection_window = min(limits.connection_window or 2 * self.stream_window, 2**31 - 1)
        h2c.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: self.stream_window,
                SettingCodes.MAX_FRAME_SIZE: frames.max_frame_size,
                SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            },
        )
        h2c.max_inbound_frame_size = frames.max_frame_size
        h2c.decoder.max_header_list_size = limits.max_header_list_size
        h2c.encoder = encoder = CachingEncoder(h2c.encoder, constant_headers)
        h2c.constant_headers = encoder.constant
        self.readers: dict[int, MessageReader] = {}
        # Parsed request headers by header list: clients repeat the same list per call.
        self._requests: dict[tuple[Any, ...], RequestReceived] = {}
        self.settings_received = False
        self._dispatch: dict[type, Callable[[Any], list[Any]]] = {
            h2.events.RequestReceived: self._request_received,
            h2.events.DataReceived: self._data_received,
            h2.events.StreamEnded: self._stream_ended,
            h2.events.StreamReset: self._stream_reset,
            h2.events.WindowUpdated: self._window_updated,
            h2.events.RemoteSettingsChanged: self._settings_changed,
        }

    def initiate_connection(self) -> None:
        """Our SETTINGS, and the connection window opened to ``connection_window``."""
        h2c = self.h2_connection
        h2c.initiate_connection()
        if self.connection_window > _DEFAULT_WINDOW:
            h2c.increment_flow_control_window(self.connection_window - _DEFAULT_WINDOW)
        # h2 starts its own account of this window at the stream window; keep it exact.
        h2c._inbound_flow_control_window_manager = WindowManager(self.connection_window)

    def receive_data(self, data: bytes) -> list[Any]:
        out: list[Any] = []
        dispatch = self._dispatch
        for event in self.h2_connection.receive_data(data):
            handler = dispatch.get(type(event))
            if handler is not None:
                out.extend(handler(event))
        return out

    def acknowledge(self, stream_id: int, flow_controlled: int) -> None:
        if flow_controlled:
            self.h2_connection.acknowledge_received_data(flow_controlled, stream_id)

    def forget(self, stream_id: int) -> None:
        """Drop all per-stream state once the stream is done; give back what it held."""
        reader = self.readers.pop(stream_id, None)
        if reader is not None:
            self.acknowledge(stream_id, reader.unacknowledged)

    def _fail(self, stream_id: int, status: Status, http_status: int = 200) -> list[Any]:
        self.forget(stream_id)
        return [StreamFailed(stream_id, status, http_status)]

    def _request_received(self, event: h2.events.RequestReceived) -> list[Any]:
        sid = event.stream_id
        key = tuple(event.headers)
        template = self._requests.get(key)
        if template is None:
            headers = HeaderDict(event.headers)
            problem = _header_problem(headers)
            if problem is not None:
                return self._fail(sid, problem.status, problem.http_status)
            try:
                template = RequestReceived.parse_from_stream_id_and_headers_destructive(0, headers)
            except Exception:  # purerpc's parser raises what it meets; each is the peer's fault
                status = Status(StatusCode.INTERNAL, "malformed gRPC request headers")
                return self._fail(sid, status)
            if len(self._requests) >= _REQUEST_CACHE_LIMIT:
                self._requests.clear()
            self._requests[key] = template
        request = _copy_request(template, sid)
        if event.stream_ended:
            return [request, *self._fail(sid, Status(StatusCode.INTERNAL, "request has no body"))]
        self.readers[sid] = MessageReader(request.message_encoding, self.max_message_length)
        return [request]

    def _data_received(self, event: h2.events.DataReceived) -> list[Any]:
        sid = event.stream_id
        length = event.flow_controlled_length
        reader = self.readers.get(sid)
        if reader is None:
            # A failed, finished or unknown stream: give the window back, drop the bytes.
            self.acknowledge(sid, length)
            return []
        try:
            messages = reader.feed(event.data, length)
        except MessageError as exc:
            return self._fail(sid, exc.status)
        return [MessageReceived(sid, message, size) for message, size in messages]

    def _stream_ended(self, event: h2.events.StreamEnded) -> list[Any]:
        return [RequestEnded(event.stream_id)]

    def _stream_reset(self, event: h2.events.StreamReset) -> list[Any]:
        self.forget(event.stream_id)
        return [StreamReset(event.stream_id)]

    def _window_updated(self, event: h2.events.WindowUpdated) -> list[Any]:
        return [WindowUpdated(event.stream_id, event.delta)]

    def _settings_changed(self, event: h2.events.RemoteSettingsChanged) -> list[Any]:
        self.settings_received = True  # the peer's preface is complete
        return []
