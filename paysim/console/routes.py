"""``add_console``: the console's routes on the HTTP endpoint, each behind the guard.

Pages and assets: ``/console`` (the page, or the login form when a token is
needed and missing), ``/console/app.js``, ``/console/app.css`` (package data,
read once; no CDN, works offline). Reads: ``GET /console/api/*``. Actions:
``POST /console/api/*`` (token, same origin, JSON, not read-only: see
``paysim.console.auth``), among them ``/console/api/faults/change``
(``paysim.console.faults``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from urllib.parse import parse_qs

from paysim.console.actions import Actions
from paysim.console.api import Console
from paysim.console.auth import Guard, same_origin
from paysim.console.faults import FaultsView
from paysim.entrypoints.http import Handler, HttpApp, HttpRequest, HttpResponse, json_response

_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
}
_PAGE_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Frame-Options", "DENY"),
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
    ),
)


def _asset(name: str) -> HttpResponse:
    body = resources.files("paysim.console").joinpath("static").joinpath(name).read_bytes()
    return HttpResponse(200, body, _TYPES[name.rsplit(".", 1)[1]], _PAGE_HEADERS)


def _login_page(guard: Guard, message: str = "") -> HttpResponse:
    page = _asset("login.html")
    body = page.body.replace(b"{{message}}", message.encode())
    return HttpResponse(401, body, page.content_type, page.headers)


def add_console(app: HttpApp, console: Console, actions: Actions) -> None:
    guard = console.guard
    get, post = frozenset({"GET"}), frozenset({"POST"})
    index = _asset("index.html")

    async def page(request: HttpRequest) -> HttpResponse:
        return index if guard.authorized(request) else _login_page(guard)

    async def login(request: HttpRequest) -> HttpResponse:
        if not same_origin(request):
            return json_response(403, {"error": "cross-origin request refused"})
        offered = parse_qs(request.body.decode("utf-8", "replace")).get("token", [""])[0]
        if not guard.needs_token or not guard.check_token(offered):
            return _login_page(guard, "That is not the console token.")
        headers = (("Location", "/console"), guard.cookie(offered))
        return HttpResponse(303, b"", "text/plain", headers)

    app.add_route("/console", get, page)
    app.add_route("/console/login", post, login)
    for name in ("app.js", "app.css"):
        app.add_route(f"/console/{name}", get, _static(_asset(name)))
    for name, read in (
        ("payments", console.payments),
        ("payment", console.payment),
        ("endpoints", console.endpoints),
        ("overview", console.overview_route),
        ("meta", console.meta),
        ("events", console.events),
        ("reconciliation", console.reconciliation_route),
    ):
        app.add_route(f"/console/api/{name}", get, _reader(guard, read))
    faults = FaultsView(lambda: console.faults)
    app.add_route("/console/api/faults", get, _reader(guard, faults.read))
    app.add_route("/console/api/faults/change", post, _writer(guard, faults.change))
    for name, act in (
        ("action", actions.act),
        ("create", actions.create),
        ("endpoint", actions.endpoint),
        ("recover", actions.recover),
    ):
        app.add_route(f"/console/api/{name}", post, _writer(guard, actions.handler(act)))


def _static(response: HttpResponse) -> Handler:
    async def handle(request: HttpRequest) -> HttpResponse:
        return response

    return handle


def _reader(guard: Guard, handler: Handler) -> Handler:
    async def handle(request: HttpRequest) -> HttpResponse:
        if not guard.authorized(request):
            return json_response(401, {"error": "the console token is required"})
        return await handler(request)

    return handle


def _writer(guard: Guard, handler: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> Handler:
    async def handle(request: HttpRequest) -> HttpResponse:
        if not guard.authorized(request):
            return json_response(401, {"error": "the console token is required"})
        if not same_origin(request):
            return json_response(403, {"error": "cross-origin request refused"})
        if guard.read_only:
            return json_response(403, {"error": "the console is read-only (CONSOLE_READ_ONLY)"})
        content_type = (request.header(b"content-type") or b"").split(b";")[0].strip()
        if content_type != b"application/json":
            return json_response(415, {"error": "send application/json"})
        return await handler(request)

    return handle
