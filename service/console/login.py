"""Signing in with an API key, signing out, the landing redirect and the stylesheet.

The login form is protected against cross-site submission by a double-submit
token (a random value in an HttpOnly, SameSite=Strict cookie and in a hidden
field); once signed in, every form carries the session's own CSRF token.
"""

from __future__ import annotations

import secrets
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from domain.credentials import key_digest
from domain.errors import Forbidden, Unauthenticated
from service.application.auth import authenticate
from service.console.sessions import caller_of, csrf_matches
from service.console.web import (
    COOKIE,
    COOKIE_PATH,
    LOGIN_COOKIE,
    PAGES,
    ConsoleRoute,
    ServicesDep,
    StateDep,
    Viewer,
    check_csrf,
    render,
    signed_in,
)

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
site_root = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
NOTICES = {
    "expired": ("Your session has ended; sign in again.", "warn"),
    "revoked": ("Your API key no longer works (revoked, or the account was deactivated); you were signed out.", "bad"),
    "signed-out": ("You have signed out.", "ok"),
}
STYLESHEET = resources.files("service.console").joinpath("static/console.css").read_text(encoding="utf-8")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path of this site, never elsewhere."""
    if (
        not target
        or not target.startswith("/console")
        or target.startswith(("//", "/console/login", "/console/logout"))
        or any(c in target for c in "\\\r\n\t")
    ):
        return "/console"
    return target


def _login_page(
    request: Request, next_path: str, notice: str = "", kind: str = "bad", status_code: int = 200
) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        status_code=status_code,
        title="Sign in",
        next=next_path,
        notice=notice,
        notice_kind=kind,
        csrf_token=token,
    )
    response.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="strict", path=COOKIE_PATH, secure=request.url.scheme == "https"
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request,
    services: ServicesDep,
    state: StateDep,
    next: Annotated[str, Query(max_length=2000)] = "/console",
    message: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    """The login form (or straight on, for a browser with a live session)."""
    session = state.sessions.find(request.cookies.get(COOKIE))
    if session is not None:
        try:
            caller_of(services.ledger, session)
            return RedirectResponse(safe_next(next), status_code=303)
        except Unauthenticated:
            state.sessions.close(request.cookies.get(COOKIE))
    notice, kind = NOTICES.get(message, ("", "bad"))
    return _login_page(request, safe_next(next), notice, kind)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    services: ServicesDep,
    state: StateDep,
    api_key: Annotated[str, Form(max_length=512)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/console",
) -> Response:
    """Check the API key; on success open a session and go on to ``next``."""
    target = safe_next(next)
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not csrf_matches(expected, csrf_token):
        return _login_page(
            request, target, "The login form expired or came from another site; try again.", status_code=403
        )
    token_text = api_key.strip()
    try:
        caller = authenticate(services.ledger, token_text)
    except Unauthenticated:
        return _login_page(request, target, "Unknown, revoked or deactivated API key.", status_code=401)
    token, _ = state.sessions.open(caller.id, key_digest(token_text))
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="strict", path=COOKIE_PATH, secure=request.url.scheme == "https"
    )
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/logout")
def logout(
    viewer: Annotated[Viewer, Depends(signed_in)],
    state: StateDep,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """End the session."""
    check_csrf(viewer, csrf_token)
    state.sessions.close(viewer.token)
    response = RedirectResponse("/console/login?message=signed-out", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


@router.get("")
def landing(viewer: Annotated[Viewer, Depends(signed_in)]) -> Response:
    """The first page the viewer's roles open."""
    for _, href, action in PAGES:
        if viewer.can(action):
            return RedirectResponse(href, status_code=303)
    raise Forbidden(f"no console page is open to the roles {', '.join(viewer.caller.roles) or 'none'}")


@site_root.get("/")
def root() -> Response:
    """The site's root opens the console."""
    return RedirectResponse("/console", status_code=307)


@router.get("/static/console.css")
def stylesheet() -> Response:
    """The console's only stylesheet."""
    return Response(STYLESHEET, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})
