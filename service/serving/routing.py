"""Which version answers each record: the champion, or the canary for its share; the challenger in shadow.

A deployment names versions; routing draws, per record, whether the canary
answers it (its share of traffic), and pairs each version with its loaded
model. The challenger is offered every record and predicts in shadow: its
predictions are recorded and never returned.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from domain.deployment import Deployment
from domain.model import ModelVersion
from domain.prediction import CANARY, CHALLENGER, CHAMPION
from service.application.ledger_core import LedgerCore
from service.common.bounded_cache import BoundedCache
from service.serving.models import ModelCache, ServedModel

_MAX_VERSIONS = 256  # model versions kept read


@dataclass(frozen=True, slots=True)
class Route:
    """A version, its loaded model, its role, and the indexes of the request's records routed to it."""

    version: ModelVersion
    served: ServedModel
    role: str
    indexes: Sequence[int]


@dataclass(frozen=True, slots=True)
class Routing:
    """Where a request's records go: each to the champion or the canary; every one to the challenger."""

    champion: Route
    canary: Route | None
    challenger: Route | None

    @property
    def answering(self) -> list[Route]:
        """The champion and the canary, those of them that answer records of this request."""
        return [route for route in (self.champion, self.canary) if route is not None and route.indexes]


class Router:
    """Routes requests by their model's deployment, with the versions' models loaded."""

    def __init__(self, ledger: LedgerCore, models: ModelCache, rng: random.Random) -> None:
        self._ledger = ledger
        self._models = models
        self._rng = rng
        self._draws = threading.Lock()  # the canary draws share one random generator
        self._versions: BoundedCache[str, ModelVersion] = BoundedCache(_MAX_VERSIONS)

    def route(self, deployment: Deployment, count: int) -> Routing:
        """Where the ``count`` records of one request go."""
        assert deployment.champion is not None
        champion_version = self._version(deployment.champion.version_id)
        champion_model = self._models.get(champion_version)
        canary = None
        if deployment.canary is None:
            champion = Route(champion_version, champion_model, CHAMPION, range(count))
        else:
            canary_version = self._version(deployment.canary.version_id)
            canary_model = self._models.get(canary_version)
            share = deployment.canary.share
            with self._draws:
                draws = [self._rng.random() for _ in range(count)]
            to_champion: list[int] = []
            to_canary: list[int] = []
            for i, draw in enumerate(draws):
                (to_canary if draw < share else to_champion).append(i)
            champion = Route(champion_version, champion_model, CHAMPION, to_champion)
            canary = Route(canary_version, canary_model, CANARY, to_canary)
        challenger = None
        if deployment.challenger is not None:
            challenger_version = self._version(deployment.challenger.version_id)
            challenger = Route(challenger_version, self._models.get(challenger_version), CHALLENGER, range(count))
        return Routing(champion, canary, challenger)

    def _version(self, version_id: str) -> ModelVersion:
        """A model version; what serving reads of it (id, number, schema, run, artifact) never changes."""
        version = self._versions.get(version_id)
        if version is None:
            version = self._ledger.get(version_id, ModelVersion)
            self._versions.put(version_id, version)
        return version
