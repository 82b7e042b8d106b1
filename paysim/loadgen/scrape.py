"""A server's Prometheus text, read back into numbers: for benchmarks and chaos reports.

``scrape(http_port)`` fetches ``/metrics`` from a paysim on loopback and keys
every sample ``name{labels}`` exactly as the exposition writes it; ``series``
sums the samples of one name whose labels include the given ones, and
``by_label`` splits one name's samples by a label's value. Blocking (urllib):
trio callers run ``scrape`` in a thread.
"""

from __future__ import annotations

import contextlib
import re
import urllib.request


def scrape(http_port: int) -> dict[str, float]:
    """Every sample on the server's /metrics, keyed ``name{labels}`` as written there."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


def series(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def by_label(metrics: dict[str, float], name: str, label: str) -> dict[str, float]:
    """``name``'s non-zero samples summed per value of ``label``."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        found = re.search(rf'{label}="([^"]*)"', rest)
        if base == name and found and value:
            out[found.group(1)] = out.get(found.group(1), 0.0) + value
    return out
