"""The send shortcut in ``GuardedH2Connection`` is h2's own send, byte for byte and
state for state: the same frames, the same stream states and windows, the same
errors. Each case runs on two connections fed the same client bytes: one with
the shortcut, one forced through h2's own ``send_headers``/``send_data``."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.exceptions
import pytest
from h2.stream import StreamState

from paysim.entrypoints.grpc.calls import OK_TRAILERS, RESPONSE_HEADERS
from paysim.entrypoints.grpc.h2_guard import GuardedH2Connection
from paysim.entrypoints.grpc.protocol import ConnectionLimits, ServerConnection
from tests.h2_client import CREATE_REQUEST_HEADERS

REQUEST = CREATE_REQUEST_HEADERS


def _pair(streams: int = 1, *, shortcut: bool) -> tuple[GuardedH2Connection, list[Any]]:
    server = ServerConnection(
        ConnectionLimits(max_message_length=4096),
        (RESPONSE_HEADERS, OK_TRAILERS),
        clock=lambda: 0.0,
    )
    server.initiate_connection()
    h2c = server.h2_connection
    if not shortcut:
        h2c.constant_headers = lambda headers: None
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    for n in range(streams):
        sid = 1 + 2 * n
        client.send_headers(sid, REQUEST)
        client.send_data(sid, b"\x00\x00\x00\x00\x00", end_stream=True)
    events = server.receive_data(client.data_to_send())
    h2c.data_to_send()  # our SETTINGS and its ACK: not under test
    return h2c, events


def _state(h2c: GuardedH2Connection) -> Any:
    return (
        h2c.data_to_send(),
        h2c.outbound_flow_control_window,
        h2c.state_machine.state,
        {
            sid: (
                s.state_machine.state,
                s.outbound_flow_control_window,
                s.state_machine.trailers_sent,
            )
            for sid, s in h2c.streams.items()
        },
    )


def _both(script: Any, streams: int = 1) -> tuple[Any, Any]:
    out = []
    for shortcut in (True, False):
        h2c, _ = _pair(streams, shortcut=shortcut)
        try:
            script(h2c)
            outcome: Any = None
        except h2.exceptions.H2Error as exc:
            outcome = (type(exc), str(exc))
        out.append((outcome, _state(h2c)))
    return out[0], out[1]


def test_a_unary_answer_is_the_same_bytes_and_state() -> None:
    def answer(h2c: GuardedH2Connection) -> None:
        h2c.send_headers(1, RESPONSE_HEADERS)
        h2c.send_data(1, b"\x00\x00\x00\x00\x03abc")
        h2c.send_headers(1, OK_TRAILERS, end_stream=True)

    fast, slow = _both(answer)
    assert fast == slow
    assert fast[0] is None
    assert fast[1][0]
    assert fast[1][3][1][0] is StreamState.CLOSED


def test_interleaved_streams_and_data_ending_the_stream() -> None:
    def answer(h2c: GuardedH2Connection) -> None:
        for sid in (3, 1, 5):
            h2c.send_headers(sid, RESPONSE_HEADERS)
        h2c.send_data(5, b"x" * 1000)
        h2c.send_data(1, b"y" * 16_384, end_stream=True)
        h2c.send_headers(3, OK_TRAILERS, end_stream=True)

    fast, slow = _both(answer, streams=3)
    assert fast == slow


@pytest.mark.parametrize(
    "script",
    [
        # trailers without END_STREAM
        lambda c: (c.send_headers(1, RESPONSE_HEADERS), c.send_headers(1, OK_TRAILERS)),
        # anything after the stream has ended
        lambda c: (c.send_headers(1, OK_TRAILERS, end_stream=True), c.send_headers(1, OK_TRAILERS)),
        lambda c: (c.send_headers(1, OK_TRAILERS, end_stream=True), c.send_data(1, b"x")),
        # more than the peer's window (65,535) or its frame size (16,384)
        lambda c: (c.send_headers(1, RESPONSE_HEADERS), c.send_data(1, b"x" * 16_385)),
        lambda c: (
            c.send_headers(1, RESPONSE_HEADERS),
            [c.send_data(1, b"x" * 16_384) for _ in range(4)],
            c.send_data(1, b"x" * 10),
        ),
        # after the peer reset the stream
        lambda c: (c.reset_stream(1), c.send_headers(1, RESPONSE_HEADERS)),
        # a stream that was never opened
        lambda c: c.send_headers(7, RESPONSE_HEADERS),
        lambda c: c.send_data(7, b"x"),
    ],
)
def test_the_same_errors_as_h2(script: Any) -> None:
    fast, slow = _both(script)
    assert fast[0] is not None  # each script is a mistake h2 refuses
    assert fast == slow
