"""The web console for compliance officers, served by the API process.

Server-rendered pages (Jinja2 templates, inline SVG, one stylesheet, no
scripts) over the same read models as the API: the audit trail, models with
their lineage and signed approvals, decision lookup, and the ledger's
checkpoint and verification. Sign-in takes an API key and opens a server-side
session; the roles of the key's principal decide which pages open.
"""

from __future__ import annotations

from fastapi import APIRouter

from service.console import audit_page, decision_page, export_pages, ledger_page, login, model_pages, run_page

router = APIRouter()
router.include_router(login.site_root)
for _module in (login, audit_page, model_pages, run_page, export_pages, decision_page, ledger_page):
    router.include_router(_module.router)

__all__ = ["router"]
