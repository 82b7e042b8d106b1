"""HTTP/1.1 client framing: a request head written in one piece, a response read from bytes.

``Http1Client`` used h11 for both, and h11 is thorough: an event object per
step, a state machine for both sides, a regex per header. For one webhook
that was about 70-90 µs of CPU (the request's validation 16 µs, ``send``
14 µs, reading the answer through ``next_event`` most of the rest), a quarter
of a delivery. A client that sends one whole request and then reads one whole
response needs much less: this module checks what it writes against the same
grammar (RFC 9110 §5.6.2 tokens, §5.5 field values) and parses what it reads
in one pass per head, with the same bounds.

``encode_request`` refuses (``ValueError``) a method or header name that is
not a token, a target with spaces or controls, a header value with CR, LF,
NUL or another control character (no header injection), or edge whitespace.

``ResponseReader`` reads one response, skipping 1xx interim ones (101 is an
error: we never ask to switch). Its framing follows RFC 9112 §6.3: no body
for HEAD, 204 and 304; ``Transfer-Encoding: chunked`` (any other transfer
coding is an error; with a Content-Length as well, chunked wins and the
connection is not reused); a Content-Length (one value, however often it is
repeated); otherwise the body runs until the server closes. It raises
``FramingError`` for anything malformed, and bounds what it holds: the head
(status line and headers, and the chunked trailers) to ``max_head`` bytes, the
body to ``max_body`` bytes, a chunk-size line to ``max_head`` bytes. Lines may
end in CRLF or a bare LF; an obsolete line folding is replaced by a space
(RFC 9112 §5.2).

``reusable`` says whether the connection may carry another request: HTTP/1.1,
no ``Connection: close`` on either side, a body framed by length or chunks,
and not a byte more than the response (a server that sends more is not
trusted with the next request).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VCHAR = rb"[\x21-\x7e\x80-\xff]"
# A field value: visible characters, with single runs of spaces or tabs inside.
_VALUE = rb"(?:" + _VCHAR + rb"+(?:[ \t]+" + _VCHAR + rb"+)*)?"
_TOKEN_RE = re.compile(_TOKEN)
_VALUE_RE = re.compile(_VALUE)
_TARGET_RE = re.compile(rb"[\x21-\x7e]+")
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _VALUE + rb")[ \t]*")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?")
_HEAD_END = re.compile(rb"\n\r?\n")
_MAX_LENGTH_DIGITS = 19

Header = tuple[bytes, bytes]
# Header names already found to be tokens: a request repeats the same few, and a
# set lookup is cheaper than the match (bounded: emptied when it fills).
_VALID_NAMES: set[bytes] = set()
_MAX_VALID_NAMES = 256


class FramingError(Exception):
    """The response is malformed or over a bound; the connection cannot be trusted."""


def encode_request(method: bytes, target: bytes, headers: list[Header], body: bytes) -> bytes:
    """The request as it goes on the wire (head, then body); ``ValueError`` if it is not valid.

    ``headers`` go in the order given (the caller puts Host first).
    """
    if not _TOKEN_RE.fullmatch(method):
        raise ValueError(f"illegal method {method!r}")
    if not _TARGET_RE.fullmatch(target):
        raise ValueError("illegal request target (spaces or control characters)")
    lines = [b"%s %s HTTP/1.1\r\n" % (method, target)]
    names = _VALID_NAMES
    for name, value in headers:
        if name not in names:
            if not _TOKEN_RE.fullmatch(name):
                raise ValueError(f"illegal header name {name!r}")
            if len(names) >= _MAX_VALID_NAMES:
                names.clear()
            names.add(name)
        if not _VALUE_RE.fullmatch(value):
            raise ValueError(f"illegal value for header {name.decode('latin-1')}")
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def asks_to_close(headers: Iterable[Header]) -> bool:
    """Whether these headers hold ``Connection: close`` (a token, any case)."""
    return any(name.lower() == b"connection" and _has_close(value) for name, value in headers)


def _has_close(value: bytes) -> bool:
    return any(token.strip().lower() == b"close" for token in value.split(b","))


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    headers: tuple[Header, ...]  # names lower-cased
    keep_alive: bool


class ResponseReader:
    """Reads one response from the bytes ``feed`` gives it; see the module docstring.

    ``feed(data)`` returns True once the response is complete (then ``head``
    and ``body`` hold it). ``feed(b"")`` says the server closed: it completes a
    body that runs until the close, and raises ``FramingError`` for any other
    response cut short.
    """

    def __init__(self, *, head_request: bool, max_head: int, max_body: int) -> None:
        self._head_request = head_request
        self._max_head = max_head
        self._max_body = max_body
        self._buffer = bytearray()
        self._searched = 0  # how far the head's end was looked for
        self._body = bytearray()
        # The state is the unbound method, called with self: a bound method kept on
        # self would make a reference cycle, and every webhook's reader (with its
        # head and headers) would wait for the garbage collector to be freed.
        self._state: Callable[[ResponseReader], bool] = ResponseReader._read_head
        self._remaining = 0  # body bytes still to come (length framing) or of this chunk
        self._until_close = False
        self._chunked = False
        self._trailer_bytes = 0
        self.head: Head | None = None
        self.done = False

    @property
    def body(self) -> bytes:
        return bytes(self._body)

    @property
    def reusable(self) -> bool:
        """The connection may carry another request (module docstring)."""
        return (
            self.done
            and self.head is not None
            and self.head.keep_alive
            and not self._until_close
            and not self._buffer
        )

    def feed(self, data: bytes | bytearray) -> bool:
        if self.done:
            raise FramingError("more data after the complete response")
        if not data:
            return self._closed()
        self._buffer += data
        while self._state(self):
            if self.done:
                return True
        return False

    def _closed(self) -> bool:
        reading_to_close = self._state is ResponseReader._read_until_close
        if self.head is not None and self._until_close and reading_to_close:
            self._read_until_close()
            self.done = True
            return True
        raise FramingError("the connection closed before the response was complete")

    # -- the head --------------------------------------------------------------------
    def _read_head(self) -> bool:
        buffer = self._buffer
        found = _HEAD_END.search(buffer, max(0, self._searched - 2))
        if found is None:
            if len(buffer) > self._max_head:
                raise FramingError(f"response head over {self._max_head} bytes")
            self._searched = len(buffer)
            return False
        end = found.end()
        if end > self._max_head:
            raise FramingError(f"response head over {self._max_head} bytes")
        lines = bytes(buffer[: found.start()]).split(b"\n")
        del buffer[:end]
        self._searched = 0
        status_line = lines[0].removesuffix(b"\r")
        status = _STATUS_LINE.fullmatch(status_line)
        if status is None:
            raise FramingError("not an HTTP/1.x status line")
        code = int(status.group(2))
        headers = _parse_fields(lines[1:])
        if code < 200:
            if code == 101:
                raise FramingError("unexpected 101 Switching Protocols")
            return True  # an interim response: the real one follows
        keep_alive = status.group(1) == b"1" and not asks_to_close(headers)
        self.head = Head(code, headers, keep_alive)
        self._frame(code, headers)
        return True

    def _frame(self, code: int, headers: tuple[Header, ...]) -> None:
        transfer = [value for name, value in headers if name == b"transfer-encoding"]
        lengths = [value for name, value in headers if name == b"content-length"]
        if self._head_request or code in (204, 304):
            self._finish()
        elif transfer:
            codings = [c.strip().lower() for value in transfer for c in value.split(b",")]
            if codings != [b"chunked"]:
                raise FramingError("unsupported Transfer-Encoding (only chunked is read)")
            self._chunked = True
            if lengths:  # RFC 9112 §6.3: chunked wins, and the connection is not reused
                self._until_close = True
            self._state = ResponseReader._read_chunk_size
        elif lengths:
            values = {v.strip() for value in lengths for v in value.split(b",")}
            if len(values) != 1:
                raise FramingError("conflicting Content-Length values")
            (value,) = values
            if not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                raise FramingError("bad Content-Length")
            self._remaining = int(value)
            if self._remaining > self._max_body:
                raise FramingError(f"response body over {self._max_body} bytes")
            self._state = ResponseReader._read_length
        else:
            self._until_close = True
            self._state = ResponseReader._read_until_close

    def _finish(self) -> None:
        self.done = True
        self._state = ResponseReader._after_end

    def _after_end(self) -> bool:
        return False

    # -- bodies --------------------------------------------------------------------------
    def _read_length(self) -> bool:
        take = min(self._remaining, len(self._buffer))
        self._body += self._buffer[:take]
        del self._buffer[:take]
        self._remaining -= take
        if self._remaining:
            return False
        self._finish()
        return True

    def _read_until_close(self) -> bool:
        self._body += self._buffer
        self._buffer.clear()
        if len(self._body) > self._max_body:
            raise FramingError(f"response body over {self._max_body} bytes")
        return False

    def _read_chunk_size(self) -> bool:
        line = self._line()
        if line is None:
            return False
        size = _CHUNK_SIZE.fullmatch(line)
        if size is None:
            raise FramingError("bad chunk size line")
        self._remaining = int(size.group(1), 16)
        if len(self._body) + self._remaining > self._max_body:
            raise FramingError(f"response body over {self._max_body} bytes")
        self._state = (
            ResponseReader._read_chunk if self._remaining else ResponseReader._read_trailers
        )
        return True

    def _read_chunk(self) -> bool:
        needed = self._remaining + 2
        if len(self._buffer) < needed:
            return False
        if self._buffer[self._remaining : needed] != b"\r\n":
            raise FramingError("a chunk is not followed by CRLF")
        self._body += self._buffer[: self._remaining]
        del self._buffer[:needed]
        self._state = ResponseReader._read_chunk_size
        return True

    def _read_trailers(self) -> bool:
        line = self._line()
        if line is None:
            return False
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > self._max_head:
            raise FramingError(f"trailers over {self._max_head} bytes")
        if not line:
            self._finish()
            return True
        _parse_fields([line])  # checked, then dropped: nothing here reads trailers
        return True

    def _line(self) -> bytes | None:
        """The next line without its end (CRLF or LF), or None until it is complete."""
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > self._max_head:
                raise FramingError(f"a line over {self._max_head} bytes")
            return None
        line = bytes(self._buffer[:end]).removesuffix(b"\r")
        del self._buffer[: end + 1]
        return line


def _parse_fields(lines: list[bytes]) -> tuple[Header, ...]:
    """Header lines (without their line ends) as (lower-case name, value) pairs."""
    fields: list[Header] = []
    for raw in lines:
        line = raw.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t"):  # obsolete line folding: part of the last value
            if not fields:
                raise FramingError("a folded line before any header")
            folded = _VALUE_RE.fullmatch(line.strip(b" \t"))
            if folded is None:
                raise FramingError("illegal characters in a folded header line")
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + folded.group() if value else folded.group())
            continue
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            raise FramingError("malformed header line")
        fields.append((match.group(1).lower(), match.group(2)))
    return tuple(fields)
