"""Which deployment serves a model now, read once for concurrent requests and kept fresh.

A stop recorded by any process must take effect at once, so the deployment a
process keeps is used only after an indexed query shows the ledger has
nothing newer. Concurrent requests share one read (a
:class:`~service.common.group_call.GroupCall` per model, started after each
of them arrived); the predict queue may instead have checked what this
process remembers itself, with one query for its whole batch
(:attr:`Remembered.CURRENT`).
"""

from __future__ import annotations

import uuid

from domain.deployment import Deployment
from domain.errors import ModelNotDeployed, NotFound
from domain.model import Model
from service.application.ledger_core import LedgerCore
from service.common.bounded_cache import BoundedCache
from service.common.freshness import Remembered
from service.common.group_call import GroupCall

_MAX_GROUPS = 1024  # models with a shared read kept at once


class LiveDeployments:
    """The deployment that serves each model, as the ledger holds it now."""

    def __init__(self, ledger: LedgerCore) -> None:
        self._ledger = ledger
        self._deployments: dict[str, Deployment] = {}  # the last one read per model
        self._reads: BoundedCache[str, GroupCall[None, Deployment | None]] = BoundedCache(_MAX_GROUPS)

    def remembered_versions(self, model_name: str) -> dict[uuid.UUID, int]:
        """The deployment version this process last read for the model (to check with others in one query)."""
        known = self._deployments.get(model_name)
        return {} if known is None else {Deployment.create_id(model_name=model_name): known.version}

    def serving(self, model_name: str, remembered: Remembered) -> Deployment:
        """The model's deployment if it serves predictions now; else refused (not found, not deployed, stopped)."""
        known = self._deployments.get(model_name) if remembered is Remembered.CURRENT else None
        if known is not None:
            deployment: Deployment | None = known
        else:
            reads = self._reads.get(model_name)
            if reads is None:
                reads = self._reads.setdefault(model_name, GroupCall(lambda asks: [self._read(model_name)] * len(asks)))
            deployment = reads(None)
        if deployment is None:
            try:
                self._ledger.get(Model.create_id(name=model_name), Model)
            except NotFound:
                raise NotFound(f"no model named {model_name!r}", field="name") from None
            raise ModelNotDeployed(f"{model_name} is not deployed; set a champion first", field="name")
        deployment.check_serves_predictions()
        return deployment

    def _read(self, model_name: str) -> Deployment | None:
        """The deployment, or None; the last one read is kept and read again only when the ledger has newer events."""
        deployment_id = Deployment.create_id(model_name=model_name)
        known = self._deployments.get(model_name)
        if known is not None and not self._ledger.has_newer({deployment_id: known.version}):
            return known
        try:
            read: Deployment = self._ledger.get(deployment_id, Deployment)
        except NotFound:
            self._deployments.pop(model_name, None)
            return None
        self._deployments[model_name] = read
        return read
