"""Who served a model, and in which role, at a past moment: the deployment replayed from its events.

A prediction made by another serving stack is logged after the fact, naming
the version that made it, its role and the moment it was made. It is valid
only if the model's deployment had that version in that role then, and was
neither stopped nor retired (a stopped deployment serves no predictions). A
version holds a role only after the operator put it there, and only an
approved version can be put there (:meth:`Deployment.check_deployable`), so a
version in a role at a moment was approved at that moment.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from domain.deployment import Deployment
from domain.errors import NotServedInRole
from domain.prediction import CANARY, CHAMPION


@dataclass(frozen=True, slots=True)
class DeploymentState:
    """What served the model from ``since`` until the next state (version ids; None where nobody)."""

    since: datetime
    champion: str | None
    canary: str | None
    stopped: bool
    retired: bool


class DeploymentHistory:
    """The states of one model's deployment over time, oldest first."""

    def __init__(self, model_name: str, states: list[DeploymentState]) -> None:
        self.model_name = model_name
        self.states = states
        self._times = [state.since for state in states]

    @classmethod
    def replay(cls, model_name: str, events: Iterable[Deployment.Event]) -> DeploymentHistory:
        """Replay the deployment's events (in order), keeping its state after each one."""
        deployment: Deployment | None = None
        states: list[DeploymentState] = []
        for e in events:
            deployment = e.mutate(deployment)
            assert deployment is not None
            states.append(
                DeploymentState(
                    since=e.timestamp,
                    champion=None if deployment.champion is None else deployment.champion.version_id,
                    canary=None if deployment.canary is None else deployment.canary.version_id,
                    stopped=deployment.stopped,
                    retired=deployment.retired,
                )
            )
        return cls(model_name, states)

    def at(self, moment: datetime) -> DeploymentState | None:
        """The state in force at ``moment`` (an event at exactly that moment counts), None before the first."""
        index = bisect.bisect_right(self._times, moment)
        return None if index == 0 else self.states[index - 1]

    def check_served(self, version_id: str, number: int, role: str, moment: datetime, *, field: str) -> None:
        """Refuse unless the version held ``role`` (champion or canary) of a live deployment at ``moment``."""
        where = f"{self.model_name} v{number}"
        state = self.at(moment)
        if state is None:
            raise NotServedInRole(f"{self.model_name} was not deployed yet at {moment.isoformat()}", field=field)
        if state.retired or state.stopped:
            what = "retired" if state.retired else "stopped"
            raise NotServedInRole(f"{self.model_name} was {what} at {moment.isoformat()}", field=field)
        holder = state.champion if role == CHAMPION else state.canary if role == CANARY else None
        if holder != version_id:
            raise NotServedInRole(f"{where} was not the {role} at {moment.isoformat()}", field=field)
