"""The dashboard under /ui/: the same page for every address it has (the page's script picks
what to show), and its files under /ui/static/, all from the package: nothing is fetched from
elsewhere, so it works where no CDN is reachable.

The page is a client of the gateway's own REST routes (the ones /openapi.json describes). Its
answers carry a Content-Security-Policy that lets it load and call only this origin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

UI_DIR = Path(__file__).with_name("ui")
# The addresses of the pages (the runs list, a run, workers, definitions).
PAGES = ("/ui/", "/ui/runs/{id}", "/ui/workers", "/ui/definitions")
STATIC = "/ui/static"
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(UI_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def to_ui(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/ui/")


@web.middleware
async def ui_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The security headers on every /ui/ answer; static files are revalidated each time
    (a 304 when unchanged), so an upgrade is seen at once."""
    response = await handler(request)
    if request.path.startswith("/ui/"):
        response.headers.update(_SECURITY_HEADERS)
        if request.path.startswith(f"{STATIC}/"):
            response.headers["Cache-Control"] = "no-cache"
    return response


def add_dashboard(app: web.Application) -> None:
    app.router.add_get("/ui", to_ui, allow_head=False)
    for path in PAGES:
        app.router.add_get(path, page, allow_head=False)
    app.router.add_static(STATIC, UI_DIR, append_version=False)
