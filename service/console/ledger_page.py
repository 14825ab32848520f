"""The ledger's health: the latest signed checkpoint, how far each read model
has come against the ledger's head, the ledger keys, and a "verify ledger"
action that runs the full verification in the background."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from domain.permissions import Action
from projections import transparency_log as tlog
from service.console.web import ConsoleRoute, ServicesDep, StateDep, Viewer, check_csrf, page, render

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
LedgerReader = Annotated[Viewer, Depends(page(Action.READ_LEDGER_EVENTS))]
REFRESH_SECONDS = 2


@router.get("/ledger", response_class=HTMLResponse)
def ledger(request: Request, viewer: LedgerReader, services: ServicesDep, state: StateDep) -> Response:
    """Checkpoint, projection positions, keys, and the verification running or abandoned and the last result."""
    head = services.ledger.position()
    with services.engine.connect() as conn:
        checkpoint = tlog.latest_checkpoint(conn)
        size = tlog.tree_size(conn)
    positions = [
        {"name": name, "position": services.runner.position(name)} for name in sorted(services.runner.projections)
    ]
    keyring = services.ledger.keyring()
    keys = (
        [] if keyring is None else [{"key_id": kid, "current": kid == keyring.current_key_id} for kid in keyring.keys]
    )
    verification = state.verification.status()
    return render(
        request,
        "ledger.html",
        title="Ledger",
        refresh=REFRESH_SECONDS if verification.running else 0,
        origin=services.settings.log_origin,
        checkpoint=checkpoint,
        root_b64=None if checkpoint is None else base64.b64encode(checkpoint.root_hash).decode(),
        tree_size=size,
        head=head,
        positions=positions,
        keys=keys,
        running=verification.running,
        abandoned=verification.abandoned,
        last=verification.last,
    )


@router.post("/ledger/verify")
def verify(
    viewer: LedgerReader,
    services: ServicesDep,
    state: StateDep,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Start a verification of the whole ledger (one at a time across every API process) and go back
    to the ledger page, which shows the one running if this start was refused."""
    check_csrf(viewer, csrf_token)
    state.verification.start(services.settings, viewer.caller.name)
    return RedirectResponse("/console/ledger", status_code=303)
