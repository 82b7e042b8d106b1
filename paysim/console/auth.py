"""Who may use the console, and which requests count as the page's own.

* Token (CONSOLE_TOKEN): when set, a request needs ``Authorization: Bearer
  <token>`` or the ``paysim_console`` cookie that ``POST /console/login`` sets
  (HttpOnly, SameSite=Strict). Compared in constant time; never logged or
  echoed.
* Same origin (CSRF): an action (a POST) is refused unless its ``Origin``
  names the host it was sent to, or, without ``Origin``, ``Sec-Fetch-Site``
  says ``same-origin`` (or is absent: curl and scripts, which a token still
  guards). Actions also need a JSON body, which a cross-site form cannot send
  without a CORS preflight this endpoint never grants.
* Read-only (CONSOLE_READ_ONLY): every action answers 403.
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie

from paysim.entrypoints.http import HttpRequest

COOKIE = "paysim_console"


def _text(request: HttpRequest, name: bytes) -> str:
    value = request.header(name)
    return value.decode("latin-1") if value is not None else ""


class Guard:
    def __init__(self, token: str | None, *, read_only: bool) -> None:
        self._token = token
        self.read_only = read_only

    @property
    def needs_token(self) -> bool:
        return self._token is not None

    def check_token(self, offered: str) -> bool:
        return self._token is None or hmac.compare_digest(
            offered.encode("utf-8", "replace"), self._token.encode()
        )

    def authorized(self, request: HttpRequest) -> bool:
        if self._token is None:
            return True
        auth = _text(request, b"authorization")
        if auth.lower().startswith("bearer ") and self.check_token(auth[7:].strip()):
            return True
        try:
            morsel = SimpleCookie(_text(request, b"cookie")).get(COOKIE)
        except CookieError:
            return False
        return morsel is not None and self.check_token(morsel.value)

    def cookie(self, token: str) -> tuple[str, str]:
        return ("Set-Cookie", f"{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict")


def same_origin(request: HttpRequest) -> bool:
    host = _text(request, b"host")
    origin = _text(request, b"origin")
    if origin:
        return origin in (f"http://{host}", f"https://{host}")
    return _text(request, b"sec-fetch-site") in ("", "same-origin", "none")
