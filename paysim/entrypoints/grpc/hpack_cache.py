"""HPACK shortcuts for the hot path, both exact (no change on the wire).

Decoding: a header block made only of indexed fields and literals without
indexing (RFC 7541 §6.1, §6.2.2, §6.2.3) does not touch the dynamic table, so
while the table is unchanged the same bytes decode to the same headers.
Clients repeat identical header blocks for every call (h2load, grpc-go, grpcio
do), so those blocks are decoded once and cached; any block that may change the
table (a literal with indexing, a size update) clears the cache first.

Encoding: paysim's constant response headers and OK trailers are pre-encoded
with representations that never touch the dynamic table (static-table index,
literal *without* indexing), so their bytes are valid whatever the table holds.
A pending table-size update falls back to the real encoder, which emits it.

Bounds: the cache holds at most ``_CACHE_LIMIT`` blocks and ``_CACHE_BYTES``
of blocks and their decoded headers together (a gRPC request's block and
headers are a few hundred bytes; a hostile peer's distinct 16 KiB blocks would
otherwise cost megabytes per connection, times every connection); a block that
does not fit is decoded and not kept. RFC 7541 §4.2 allows at most two
dynamic-table size updates, at the start of a block; a block with more is a
COMPRESSION_ERROR before any of it is decoded (a block of nothing but size
updates once cost about a second of CPU per MiB).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import h2.errors
import h2.exceptions
from hpack import Decoder, Encoder

_CACHE_LIMIT = 256
_CACHE_BYTES = 32 * 1024  # per connection: blocks plus their decoded headers
_ENTRY_OVERHEAD = 32  # what a header pair costs beyond its name and value, roughly (RFC 7541 §4.1)


def _read_int(block: bytes, i: int, prefix_bits: int) -> tuple[int, int]:
    """Decode an HPACK integer starting at ``i``; return (value, next index)."""
    limit = (1 << prefix_bits) - 1
    value = block[i] & limit
    i += 1
    if value < limit:
        return value, i
    shift = 0
    while True:
        b = block[i]
        i += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _leaves_table_alone(block: bytes) -> bool:
    """True if no field of the block can change the dynamic table.

    Indexed fields (1xxxxxxx) and literals without indexing (0000xxxx) or
    never indexed (0001xxxx) leave it alone; a literal with incremental
    indexing (01xxxxxx) or a size update (001xxxxx) may not.
    """
    i, n = 0, len(block)
    try:
        while i < n:
            b = block[i]
            if b & 0x80:
                _, i = _read_int(block, i, 7)
            elif b & 0xE0 == 0 or b & 0xF0 == 0x10:
                name_index, i = _read_int(block, i, 4)
                strings = 1 if name_index else 2
                for _ in range(strings):
                    length, i = _read_int(block, i, 7)
                    i += length
            else:
                return False
    except IndexError:
        return False
    return i == n


class CompressionError(h2.exceptions.ProtocolError):  # type: ignore[misc]
    """Ends the connection with GOAWAY(COMPRESSION_ERROR), as RFC 7541 §4.2 asks."""

    error_code = h2.errors.ErrorCodes.COMPRESSION_ERROR


def _size_updates_at_start(block: bytes) -> int:
    """How many table-size updates (001xxxxx) open the block."""
    i, n, count = 0, len(block), 0
    try:
        while i < n and block[i] & 0xE0 == 0x20:
            _, i = _read_int(block, i, 5)
            count += 1
    except IndexError:
        pass
    return count


class CachingDecoder(Decoder):  # type: ignore[misc]
    def __init__(self, original: Decoder) -> None:
        super().__init__(max_header_list_size=original.max_header_list_size)
        self.max_allowed_table_size = original.max_allowed_table_size
        self._cache: dict[bytes, list[Any]] = {}
        self.cached_bytes = 0  # of the cached blocks and their headers (``_CACHE_BYTES``)
        # What h2 made of a cached block as a new request's headers (``h2_guard``);
        # its keys are a subset of the cache's, and it is cleared with it.
        self.requests: dict[bytes, tuple[list[Any], int | None]] = {}

    def cached(self, block: bytes) -> list[Any] | None:
        """The decoded headers of ``block`` if it is cached (valid as long as it is)."""
        return self._cache.get(block)

    def decode(self, data: bytes, raw: bool = False) -> list[Any]:
        key = bytes(data)
        if raw:
            hit = self._cache.get(key)
            if hit is not None:
                return list(hit)
        indexed = _leaves_table_alone(key)
        if not indexed:
            self._cache.clear()
            self.requests.clear()
            self.cached_bytes = 0
            if _size_updates_at_start(key) > 2:
                raise CompressionError("more than two table size updates in one header block")
        headers: list[Any] = super().decode(data, raw)
        if raw and indexed and len(self._cache) < _CACHE_LIMIT:
            size = len(key) + sum(len(n) + len(v) + _ENTRY_OVERHEAD for n, v in headers)
            if self.cached_bytes + size <= _CACHE_BYTES:
                self._cache[key] = list(headers)
                self.cached_bytes += size
        return headers


def _integer(value: int, prefix_bits: int, flags: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = [flags | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(s: str) -> bytes:
    raw = s.encode()
    return _integer(len(raw), 7, 0) + raw


# RFC 7541 Appendix A: the static-table entries paysim's constant headers use.
_STATIC_FULL = {(":status", "200"): 8}
_STATIC_NAME = {"content-type": 31}


def encode_without_indexing(headers: Iterable[tuple[str, str]]) -> bytes:
    """A header block that leaves the peer's dynamic table as it is."""
    out = []
    for name, value in headers:
        full = _STATIC_FULL.get((name, value))
        if full is not None:
            out.append(_integer(full, 7, 0x80))
            continue
        name_index = _STATIC_NAME.get(name)
        if name_index is not None:
            out.append(_integer(name_index, 4, 0x00) + _string(value))
        else:
            out.append(b"\x00" + _string(name) + _string(value))
    return b"".join(out)


class CachingEncoder(Encoder):  # type: ignore[misc]
    def __init__(self, original: Encoder, constants: Sequence[Sequence[tuple[str, str]]]) -> None:
        super().__init__()
        self.header_table = original.header_table
        self._constants = {tuple(h): encode_without_indexing(h) for h in constants}

    def constant(self, headers: Any) -> bytes | None:
        """The pre-encoded block of ``headers`` if they are one of the constants and
        no table-size update is pending (the real encoder must emit that); else None."""
        if self.header_table.resized or type(headers) is not list:
            return None
        return self._constants.get(tuple(headers))

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        hit = self.constant(headers)
        if hit is not None:
            return hit
        result: bytes = super().encode(headers, huffman)
        return result
