"""Process-level tuning: the Python garbage collector.

Measured (``python -m paysim.benchmarks.h2load``): with CPython's default
thresholds (700, 10, 10) a run of 40,000 CreatePaymentIntent calls triggered 15
full collections of up to 200 ms each, because every accepted payment is a
long-lived object; p99 latency went from 25 ms to 140 ms. paysim therefore

* freezes everything allocated during start-up (``gc.freeze``), so collections
  never scan the interpreter's and the libraries' own objects again;
* raises the thresholds (GC_THRESHOLDS, default ``20000,10,1000``): young
  collections become rare, and full ones rarer still.

Why the young threshold is 20,000 and not the 2,000 it once was: a young
collection starts when the tracked objects allocated and not yet freed pass
it, and under load the calls in flight alone (their coroutines, frames and
messages) swing by more than 2,000. So the collector ran every hundred-odd
requests, found little garbage, and scanned the suspended calls each time.
CPU in collections per request, timed with ``gc.callbacks`` over 30,000
CreatePaymentIntent calls under h2load (start-up's collections taken off):
memory store 16 µs at 2,000 against 8 at 20,000; Redis store, whose calls
wait longer, 28 against 2; the whole path (``benchmarks.delivery``, 600/s
for 30 s) 46 µs per payment against 18, and 8 once the webhook client's
response reader stopped making a reference cycle per delivery (cyclic
garbage is what young collections are for: keep new code free of cycles,
``gc.set_debug(gc.DEBUG_SAVEALL)`` shows them). 50,000 saved no more on the
whole path (20 µs against 18) and made each young collection scan more: on a
slow machine about 85 ms against 31 at 20,000. The price of 20,000: that
pause now and then, and up to 20,000 objects of cyclic garbage waiting for
it. ``paysim_gc_pause_seconds_total`` shows what collections cost a running
server.

A full collection still scans every live payment when it comes; bounded
retention keeps that bounded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable


def tune_gc(thresholds: tuple[int, int, int]) -> None:
    gc.set_threshold(*thresholds)


def freeze_startup_objects() -> None:
    """Move everything alive now out of the collector's way, for good."""
    gc.collect()
    gc.freeze()


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]  # type: ignore[attr-defined]
    trim.restype = ctypes.c_int  # type: ignore[attr-defined]
    return trim


_malloc_trim = _load_malloc_trim()


def return_free_memory() -> bool:
    """Hand the C allocator's free pages back to the OS; False where it cannot.

    CPython frees its own arenas when they empty, but the objects larger than
    512 bytes live in glibc's heap, which keeps what it freed (RSS stays up
    after a million payments are swept). ``malloc_trim(0)`` releases it. It
    walks the heap (tens of ms for a GiB), so callers use it after large frees only.
    """
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
