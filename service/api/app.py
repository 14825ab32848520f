"""The FastAPI application factory."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import problems
from service.api.routers import audit, datasets, health, ledger, lineage, manifests, models, principals, registry
from service.bootstrap import Services, open_services
from service.console import router as console_router
from service.projector import ProjectorThread
from service.settings import Settings


def create_app(
    settings: Settings | None = None,
    *,
    run_projector: bool = True,
    run_runner: bool = False,
    services: Services | None = None,
) -> FastAPI:
    """Build the API. Opens the services at startup unless given ready ones."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        opened = services or open_services(settings or Settings())
        if owned and opened.admin_api_key:
            print(f"created the first admin; its API key (shown once): {opened.admin_api_key}", flush=True)
        app.state.services = opened
        projector = ProjectorThread(opened) if run_projector else None
        if projector is not None:
            projector.start()
        stop_runner = threading.Event()
        runner_thread = None
        if run_runner:
            from service.runners.runner import Runner

            runner = Runner(
                opened,
                heartbeat_interval=opened.settings.heartbeat_seconds,
                heartbeat_timeout=opened.settings.heartbeat_timeout_seconds,
            )
            runner_thread = threading.Thread(
                target=runner.run, args=(stop_runner,), name="mlledger-runner", daemon=True
            )
            runner_thread.start()
        try:
            yield
        finally:
            stop_runner.set()
            if runner_thread is not None:
                runner_thread.join(timeout=30)
            if projector is not None:
                projector.stop()
            if owned:
                opened.close()

    app = FastAPI(
        title="ML Ledger",
        version="0.1.0",
        summary="Signed, hash-chained, transparency-logged records of machine learning.",
        lifespan=lifespan,
    )
    problems.install(app)
    app.include_router(health.router)
    app.include_router(ledger.router)
    app.include_router(principals.router)
    app.include_router(datasets.router)
    app.include_router(lineage.router)
    app.include_router(models.router)
    app.include_router(registry.router)
    app.include_router(audit.router)
    app.include_router(manifests.router)
    app.include_router(console_router)
    return app
