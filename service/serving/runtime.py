"""The serving parts of one process, opened together: vault, model cache, group committer, predictor."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass

from domain.permissions import Action
from projections.registry_queries import serving_versions
from service.application.auth import authorize_digest
from service.application.ledger import Ledger
from service.bootstrap import Services
from service.common.freshness import Remembered
from service.serving.group_commit import GroupCommitter
from service.serving.models import ModelCache
from service.serving.monitor import DriftMonitor, MonitorThread
from service.serving.predict import PredictionService
from service.serving.predict_queue import PredictQueue
from service.serving.prediction_log import PredictionLog
from service.serving.reports import ReportsThread, ReportsWorker
from service.serving.vault import SubjectVault

log = logging.getLogger(__name__)


@dataclass
class Serving:
    """What the prediction endpoints, the reports worker and the monitor share."""

    vault: SubjectVault
    models: ModelCache
    committer: GroupCommitter
    predictor: PredictionService
    log: PredictionLog
    queue: PredictQueue
    reports: ReportsWorker
    monitor: DriftMonitor
    threads: list[ReportsThread | MonitorThread]

    def start_background(self, settings_interval: float) -> None:
        """Compute reports and check drift in the background (``mlledger serve``)."""
        self.threads = [ReportsThread(self.reports), MonitorThread(self.monitor, settings_interval)]
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        """Stop the background work, write what is queued, then stop the writer."""
        for thread in self.threads:
            thread.stop()
        self.queue.stop()
        self.committer.stop()


def open_serving(services: Services) -> Serving:
    """Open the serving parts over the process's services."""
    settings = services.settings
    vault = SubjectVault(services.writer_engine, settings.keys_dir)
    models = ModelCache(services.ledger, services.blobs, settings.model_cache_size)
    committer = GroupCommitter(services.ledger, settings.group_commit_max_events)
    if settings.group_commit_commands:
        services.ledger.share_commits(committer)  # every command of this process, not only predictions
    predictor = PredictionService(
        services.ledger, models, vault, committer, top_k=settings.reason_codes, max_rows=settings.max_batch_rows
    )
    return Serving(
        vault=vault,
        models=models,
        committer=committer,
        predictor=predictor,
        log=PredictionLog(services.ledger, models, predictor.subject_keys, committer, max_rows=settings.max_batch_rows),
        queue=PredictQueue(predictor, services.ledger, functools.partial(_predicting_actor, services.ledger)),
        reports=ReportsWorker(services, models),
        monitor=DriftMonitor(services, vault),
        threads=[],
    )


def preload_served(services: Services, models: ModelCache) -> None:
    """Load the versions live deployments serve (the registry read model's list, up to the cache's size)."""
    try:
        with services.engine.connect() as conn:
            version_ids = serving_versions(conn)
        models.preload(version_ids)
    except Exception:  # the process serves all the same: a request then loads its model itself
        log.warning("the served models were not preloaded", exc_info=True)


def start_preloading(services: Services, models: ModelCache) -> threading.Thread:
    """:func:`preload_served` on a thread of its own, so the process serves while the models load."""
    thread = threading.Thread(target=preload_served, args=(services, models), name="mlledger-preload", daemon=True)
    thread.start()
    return thread


def _predicting_actor(ledger: Ledger, digest: str, remembered: Remembered) -> str:
    """The actor of the API key with this digest, if it may predict (raises otherwise)."""
    return authorize_digest(ledger, digest, Action.PREDICT, remembered).actor
