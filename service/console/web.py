"""Console plumbing: templates, the signed-in viewer, page permissions, and HTML
answers for errors (the console never answers with problem+json).

Every console route uses :class:`ConsoleRoute`, which turns "not signed in" into
a redirect to the login page, a refused permission or CSRF token into a 403
page, any other ledger error into an HTML page with its status, and adds the
security headers (a strict Content-Security-Policy: no scripts, nothing from
other origins, images only from the console or ``data:`` URIs).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from domain.errors import Forbidden, LedgerError, Unauthenticated
from domain.permissions import PERMISSIONS, Action, allowed
from service.api.deps import get_services
from service.api.errors import http_status
from service.application.auth import Caller
from service.bootstrap import Services
from service.console.sessions import Session, SessionStore, caller_of, csrf_matches
from service.console.verification import VerificationJob

COOKIE = "mll_console"
LOGIN_COOKIE = "mll_console_login"
COOKIE_PATH = "/console"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

# Which permission each page needs (the README's "Web console" section lists them).
PAGES: list[tuple[str, str, Action]] = [
    ("Audit trail", "/console/audit", Action.READ_AUDIT),
    ("Models", "/console/models", Action.READ_LINEAGE),
    ("Decisions", "/console/decisions", Action.READ_DECISIONS),
    ("Exports", "/console/exports", Action.READ_EXPORTS),
    ("Ledger", "/console/ledger", Action.READ_LEDGER_EVENTS),
]


def _short(value: object, length: int = 12) -> str:
    text = "" if value is None else str(value)
    if text.startswith("sha256:"):
        text = text[7:]
    return text if len(text) <= length else text[:length] + "…"


def _when(value: object) -> str:
    """``2026-11-22T10:00:00.123456Z`` -> ``2026-11-22 10:00:00Z`` (stored times are UTC)."""
    text = "" if value is None else str(value)
    if len(text) >= 19 and text[10] == "T":
        return f"{text[:10]} {text[11:19]}Z"
    return text


def _compact(value: object, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _gist(value: object, limit: int = 120) -> str:
    """A one-line digest of a payload summary: ``key=value`` pairs, long values clipped."""
    if not isinstance(value, dict):
        return _compact(value, limit)
    pairs = []
    for key in sorted(value):
        item = value[key]
        if isinstance(item, str) and item.startswith("sha256:"):
            text = item[:19] + "…"
        elif isinstance(item, str):
            text = item if len(item) <= 40 else item[:39] + "…"
        else:
            text = _compact(item, 40)
        pairs.append(f"{key}={text}")
    line = ", ".join(pairs)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _pretty(value: object) -> str:
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)


templates = Environment(
    loader=PackageLoader("service.console", "templates"),
    autoescape=select_autoescape(["html"], default_for_string=True, default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters.update(
    short=_short, when=_when, compact=_compact, gist=_gist, pretty=_pretty, urlquote=lambda v: quote(str(v), safe="")
)


class ConsoleState:
    """What the console keeps per application: the open sessions and the ledger
    verifications (both in the database, shared by every API process)."""

    def __init__(self, services: Services) -> None:
        self.sessions = SessionStore(services.engine, services.writer_engine)
        self.verification = VerificationJob(services.engine, services.writer_engine)


ServicesDep = Annotated[Services, Depends(get_services)]
_state_lock = threading.Lock()


def console_state(request: Request, services: ServicesDep) -> ConsoleState:
    """The application's console state, created on first use."""
    app_state = request.app.state
    with _state_lock:
        state: ConsoleState | None = getattr(app_state, "console", None)
        if state is None:
            state = ConsoleState(services)
            app_state.console = state
    return state


@dataclass(frozen=True)
class Viewer:
    """The signed-in person looking at a page."""

    caller: Caller
    session: Session
    token: str

    @property
    def csrf_token(self) -> str:
        """The token every POST form of this session carries."""
        return self.session.csrf_token

    def can(self, action: Action) -> bool:
        """True when a role of the viewer allows ``action``."""
        return allowed(action, self.caller.roles)


class NotSignedIn(Exception):
    """The request has no live session; the browser is sent to the login page."""

    def __init__(self, next_path: str, reason: str = "") -> None:
        super().__init__(reason)
        self.next_path = next_path
        self.reason = reason
        """``expired`` or ``revoked`` (shown on the login page), or empty."""


class CsrfRefused(Forbidden):
    """A form arrived without this session's CSRF token."""

    title = "Form refused"


StateDep = Annotated[ConsoleState, Depends(console_state)]


def signed_in(request: Request, services: ServicesDep, state: StateDep) -> Viewer:
    """The viewer of a live session whose API key still works, or :class:`NotSignedIn`."""
    token = request.cookies.get(COOKIE)
    session = state.sessions.find(token)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if session is None or token is None:
        raise NotSignedIn(target, "expired" if token else "")
    try:
        caller = caller_of(services.ledger, session)
    except Unauthenticated:
        state.sessions.close(token)
        raise NotSignedIn(target, "revoked") from None
    viewer = Viewer(caller, session, token)
    request.state.viewer = viewer
    return viewer


def page(action: Action) -> Callable[..., Viewer]:
    """A dependency: the viewer, if a role of theirs allows ``action`` (a 403 page otherwise)."""

    def dependency(viewer: Annotated[Viewer, Depends(signed_in)]) -> Viewer:
        if not viewer.can(action):
            needed = ", ".join(sorted(PERMISSIONS[action]))
            have = ", ".join(viewer.caller.roles) or "none"
            raise Forbidden(f"this page needs one of the roles {needed}; you have {have}")
        return viewer

    dependency.__name__ = f"page_{action.value}"
    return dependency


def check_csrf(viewer: Viewer, given: str | None) -> None:
    """Refuse a form that does not carry the session's CSRF token."""
    if not csrf_matches(viewer.csrf_token, given):
        raise CsrfRefused("the form did not carry this session's token; reload the page and try again")


def nav(viewer: Viewer | None, path: str) -> list[dict[str, Any]]:
    """The navigation bar: the pages the viewer's roles open."""
    if viewer is None:
        return []
    return [
        {"label": label, "href": href, "active": path.startswith(href)}
        for label, href, action in PAGES
        if viewer.can(action)
    ]


def render(request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``templates/<template>`` with the viewer and the navigation bar."""
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    html = templates.get_template(template).render(
        viewer=viewer, nav=nav(viewer, request.url.path), path=request.url.path, **context
    )
    return HTMLResponse(html, status_code=status_code)


def error_page(request: Request, status_code: int, title: str, detail: str) -> HTMLResponse:
    """An HTML error page (with the navigation bar when signed in)."""
    return render(request, "error.html", status_code=status_code, title=title, detail=detail)


def login_redirect(next_path: str, reason: str = "") -> RedirectResponse:
    """See other: the login page, coming back to ``next_path`` afterwards."""
    target = f"/console/login?next={quote(next_path, safe='')}"
    if reason:
        target += f"&message={quote(reason, safe='')}"
    response = RedirectResponse(target, status_code=303)
    if reason:
        response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


def secure(response: Response) -> Response:
    """Add the console's security headers."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class ConsoleRoute(APIRoute):
    """A route whose errors are HTML pages and whose answers carry the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler: Callable[[Request], Awaitable[Response]] = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except NotSignedIn as exc:
                response = login_redirect(exc.next_path, exc.reason)
            except LedgerError as exc:
                response = error_page(request, http_status(exc), exc.title, exc.detail)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
                where = ".".join(str(p) for p in first.get("loc", ())[1:])
                response = error_page(request, 422, "Invalid request", f"{where}: {first.get('msg')}")
            return secure(response)

        return route
