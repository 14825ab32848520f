"""The FastAPI application factory."""

from __future__ import annotations

import gc
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import problems
from service.api.limits import JsonBodyLimit
from service.api.routers import (
    audit,
    changes,
    datasets,
    exports,
    health,
    ledger,
    lineage,
    manifests,
    mlflow,
    models,
    monitoring,
    predictions,
    principals,
    receipts,
    registry,
    runner,
    usage,
)
from service.api.write_brake import WriteBrake
from service.bootstrap import Services, open_services
from service.console import router as console_router
from service.ops.projector import ProjectorThread
from service.serving.runtime import open_serving, start_preloading
from service.settings import Settings

# The cyclic collector's thresholds in a serving process: a young collection every
# 100,000 net container allocations (the default is 700), the older generations as usual.
SERVING_GC_THRESHOLDS = (100_000, 10, 10)


def create_app(
    settings: Settings | None = None,
    *,
    run_projector: bool = True,
    run_runner: bool = False,
    run_workers: bool | None = None,
    services: Services | None = None,
) -> FastAPI:
    """Build the API. Opens the services at startup unless given ready ones.

    ``run_workers`` (default: as ``run_projector``) computes model reports and
    checks drift in the background.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        opened = services or open_services(settings or Settings())
        if owned and opened.admin_api_key:
            print(f"created the first admin; its API key (shown once): {opened.admin_api_key}", flush=True)
        app.state.services = opened
        app.state.serving = open_serving(opened)
        app.state.write_brake = WriteBrake(
            opened,
            opened.settings.write_brake_lag_seconds,
            opened.settings.write_brake_max_wait_seconds,
            opened.settings.write_brake_max_waiting,
            concurrency=opened.settings.write_brake_concurrency,
        )
        projector = ProjectorThread(opened) if run_projector else None
        if projector is not None:
            projector.start()
        if run_projector if run_workers is None else run_workers:
            app.state.serving.start_background(opened.settings.monitor_seconds)
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
        if owned:
            # A serving process: what start-up built lives as long as the process, so the cyclic
            # collector need not scan it again and again while requests allocate (a full collection
            # over every imported module costs tens of milliseconds).
            gc.freeze()
            # Requests allocate many short-lived containers that reference counting frees; the
            # collector's default (a young collection every 700 net allocations) spent a tenth of a
            # serving process's CPU scanning the rows of large batches still in flight.
            gc.set_threshold(*SERVING_GC_THRESHOLDS)
            app.state.serving.models.freeze_loaded = True  # and what loading a model builds
            start_preloading(opened, app.state.serving.models)  # the first requests need not load them
        try:
            yield
        finally:
            app.state.serving.close()
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
    bounds = settings or (services.settings if services is not None else Settings())
    app.add_middleware(JsonBodyLimit, limit=bounds.max_json_bytes)
    app.include_router(health.router)
    app.include_router(predictions.router)  # first: the busiest routes are matched first
    app.include_router(runner.router)  # then the runners', several requests for every run
    app.include_router(ledger.router)
    app.include_router(receipts.router)
    app.include_router(principals.router)
    app.include_router(changes.router)
    app.include_router(datasets.router)
    app.include_router(lineage.router)
    app.include_router(models.router)
    app.include_router(registry.router)
    app.include_router(audit.router)
    app.include_router(manifests.router)
    app.include_router(monitoring.router)
    app.include_router(exports.router)
    app.include_router(usage.router)
    app.include_router(mlflow.router)
    app.include_router(console_router)
    return app


def api_only() -> FastAPI:
    """The API without projector, runner or background workers, for ``mlledger serve --workers N``."""
    return create_app(Settings(), run_projector=False, run_runner=False, run_workers=False)
