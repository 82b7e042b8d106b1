"""How a URL is shown in a report, the console or a log line: without its secrets.

A webhook or worker URL may carry credentials (``user:password@``) or a token
in its query string or fragment; none of them is ever shown. ``shown_url``
keeps the scheme, the host (an IPv6 address in brackets, as it is written in
a URL) with its port, and, when asked, the path. A URL that does not parse is
shown as ``(unparseable URL)``, never echoed back.
"""

from __future__ import annotations

from urllib.parse import urlsplit

UNPARSEABLE = "(unparseable URL)"


def shown_url(url: str, *, scheme: bool = True, path: bool = True) -> str:
    """``scheme://host[:port]/path``, or less: no user info, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return UNPARSEABLE
    if ":" in host:
        host = f"[{host}]"
    text = f"{host}:{port}" if port else host
    if scheme:
        text = f"{parts.scheme}://{text}"
    return text + parts.path if path else text
