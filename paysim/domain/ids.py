"""Identifiers: random, unguessable, and cheap.

``secrets.token_hex`` makes one ``getrandom`` system call per id, which showed
up at several percent of CPU under load. The same kernel randomness is drawn
in 4 KiB blocks and sliced instead; ids stay as unpredictable as before.
"""

from __future__ import annotations

import base64
import os

_BLOCK = 4096


class _Pool:
    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        if self._pos + n > len(self._buf):
            self._buf = os.urandom(_BLOCK)
            self._pos = 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out


_pool = _Pool()


def new_id(prefix: str) -> str:
    """``prefix_`` and 24 hex digits (96 random bits), e.g. ``pay_3f9c…``."""
    return f"{prefix}_{_pool.take(12).hex()}"


def new_secret(prefix: str) -> str:
    """``prefix`` and 144 random bits, URL-safe, for client secrets."""
    return prefix + base64.urlsafe_b64encode(_pool.take(18)).decode()
