"""Deployment: what serves a model name. A champion answers; a challenger
predicts in shadow; a canary takes a share of traffic; rollback returns to an
earlier champion; stop is the kill switch; retire ends it. Only versions the
approval policy has approved may serve, and only while the policy's fairness
gate passes (checked again at each deployment: a report may have arrived, or
the policy changed, since the approvals)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from eventsourcing.domain import Aggregate, event

from domain.aggregate import LedgerAggregate
from domain.approval import ApprovalPolicy, FairnessEvidence
from domain.errors import (
    AlreadyChampion,
    ApprovalRequired,
    CanaryNeedsChampion,
    DeploymentAlreadyStopped,
    DeploymentNotStopped,
    DeploymentRetired,
    DeploymentStopped,
    InvalidCanaryShare,
    NoChampion,
    NoChampionToRollBackFrom,
    NotAPastChampion,
    VersionOfAnotherModel,
    VersionRejected,
)
from domain.model import APPROVED, REJECTED, ModelVersion
from domain.statistics.series import series_id


@dataclass(frozen=True)
class Slot:
    """A version serving in a deployment slot (champion or challenger)."""

    version_id: str
    number: int


@dataclass(frozen=True)
class CanarySlot(Slot):
    """A version taking ``share`` (0 < share < 1) of a model's traffic."""

    share: float


class Deployment(LedgerAggregate):
    """The serving configuration of one model name."""

    class Created(Aggregate.Created, LedgerAggregate.Event):
        """The model was deployed for the first time."""

        TOPIC = "mlledger.deployment.Created.v1"
        model_name: str

    class ChampionSet(LedgerAggregate.Event):
        """A version became the champion."""

        TOPIC = "mlledger.deployment.ChampionSet.v1"
        model_version_id: str
        number: int
        reason: str

    class ChallengerSet(LedgerAggregate.Event):
        """A version predicts in shadow (None clears it)."""

        TOPIC = "mlledger.deployment.ChallengerSet.v1"
        model_version_id: str | None
        number: int | None

    class CanarySet(LedgerAggregate.Event):
        """A version takes ``share`` of traffic (None clears it)."""

        TOPIC = "mlledger.deployment.CanarySet.v1"
        model_version_id: str | None
        number: int | None
        share: float

    class RolledBack(LedgerAggregate.Event):
        """The champion went back to an earlier champion."""

        TOPIC = "mlledger.deployment.RolledBack.v1"
        model_version_id: str
        number: int
        from_number: int
        reason: str

    class Stopped(LedgerAggregate.Event):
        """Kill switch: nothing is served."""

        TOPIC = "mlledger.deployment.Stopped.v1"
        reason: str

    class Resumed(LedgerAggregate.Event):
        """Serving resumed after a stop."""

        TOPIC = "mlledger.deployment.Resumed.v1"
        reason: str

    class Retired(LedgerAggregate.Event):
        """The model is no longer served, for good."""

        TOPIC = "mlledger.deployment.Retired.v1"
        reason: str

    @staticmethod
    def create_id(model_name: str, **_: object) -> uuid.UUID:
        """One deployment per model name."""
        return series_id("deployment", model_name)

    @event(Created)
    def __init__(self, model_name: str, actor: str) -> None:
        self.model_name = model_name
        self.champion: Slot | None = None
        self.challenger: Slot | None = None
        self.canary: CanarySlot | None = None
        self.past_champions: list[Slot] = []
        self.stopped = False
        self.stop_reason: str | None = None
        self.retired = False

    def check_live(self) -> None:
        """A retired deployment takes no more changes."""
        if self.retired:
            raise DeploymentRetired(f"{self.model_name} is retired")

    def check_deployable(self, version: ModelVersion, policy: ApprovalPolicy, fairness: FairnessEvidence) -> None:
        """Only a version of this model that ``policy`` approved, and whose fairness passes its gate, may serve."""
        self.check_live()
        if version.model_name != self.model_name:
            raise VersionOfAnotherModel(
                f"version belongs to {version.model_name}, not {self.model_name}", field="version"
            )
        state = version.state(policy)
        if state == REJECTED:
            raise VersionRejected(
                f"{self.model_name} v{version.number} was rejected; a rejection blocks deployment "
                "until a new version is registered"
            )
        if state != APPROVED:
            raise ApprovalRequired(
                f"{self.model_name} v{version.number} has {len(version.approvers)} of "
                f"{policy.required_approvals} required approvals"
            )
        policy.check_fairness(fairness, field="version")

    def check_serves_predictions(self) -> None:
        """A stopped or retired deployment serves no predictions, nor one without a champion."""
        if self.retired:
            raise DeploymentStopped(f"{self.model_name} is retired and serves no predictions")
        if self.stopped:
            raise DeploymentStopped(f"{self.model_name} is stopped: {self.stop_reason or 'no reason given'}")
        if self.champion is None:
            raise NoChampion(f"{self.model_name} has no champion to serve predictions", field="name")

    def set_champion(
        self, version: ModelVersion, policy: ApprovalPolicy, reason: str, actor: str, *, fairness: FairnessEvidence
    ) -> None:
        """Make an approved version the champion."""
        self.check_deployable(version, policy, fairness)
        if self.champion is not None and self.champion.version_id == str(version.id):
            raise AlreadyChampion(f"v{version.number} is already the champion")
        self._set_champion(model_version_id=str(version.id), number=version.number, reason=reason, actor=actor)

    @event(ChampionSet)
    def _set_champion(self, model_version_id: str, number: int, reason: str, actor: str) -> None:
        self._promote(model_version_id, number)

    def _promote(self, model_version_id: str, number: int) -> None:
        """The version serves as champion; it stops being challenger or canary."""
        if self.champion is not None:
            self.past_champions.append(self.champion)
        self.champion = Slot(model_version_id, number)
        if self.challenger is not None and self.challenger.version_id == model_version_id:
            self.challenger = None
        if self.canary is not None and self.canary.version_id == model_version_id:
            self.canary = None

    def set_challenger(
        self, version: ModelVersion | None, policy: ApprovalPolicy, actor: str, *, fairness: FairnessEvidence
    ) -> None:
        """Shadow an approved version (or clear the challenger with None)."""
        self.check_live()
        if version is None:
            self._set_challenger(model_version_id=None, number=None, actor=actor)
            return
        self.check_deployable(version, policy, fairness)
        self._set_challenger(model_version_id=str(version.id), number=version.number, actor=actor)

    @event(ChallengerSet)
    def _set_challenger(self, model_version_id: str | None, number: int | None, actor: str) -> None:
        self.challenger = None if model_version_id is None or number is None else Slot(model_version_id, number)

    def set_canary(
        self,
        version: ModelVersion | None,
        share: float,
        policy: ApprovalPolicy,
        actor: str,
        *,
        fairness: FairnessEvidence,
    ) -> None:
        """Route ``share`` (0 < share < 1) of traffic to an approved version, or clear it."""
        self.check_live()
        if version is None:
            self._set_canary(model_version_id=None, number=None, share=0.0, actor=actor)
            return
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
            raise InvalidCanaryShare("share must be strictly between 0 and 1", field="share")
        if self.champion is None:
            raise CanaryNeedsChampion("a canary needs a champion to share traffic with")
        self.check_deployable(version, policy, fairness)
        self._set_canary(model_version_id=str(version.id), number=version.number, share=float(share), actor=actor)

    @event(CanarySet)
    def _set_canary(self, model_version_id: str | None, number: int | None, share: float, actor: str) -> None:
        self.canary = (
            None if model_version_id is None or number is None else CanarySlot(model_version_id, number, share)
        )

    def roll_back(
        self, version: ModelVersion, policy: ApprovalPolicy, reason: str, actor: str, *, fairness: FairnessEvidence
    ) -> None:
        """Return to an earlier champion (still approved, still passing the fairness gate)."""
        self.check_deployable(version, policy, fairness)
        if self.champion is None:
            raise NoChampionToRollBackFrom("there is no champion to roll back from")
        if Slot(str(version.id), version.number) not in self.past_champions:
            raise NotAPastChampion(f"v{version.number} was never the champion; roll back only to an earlier champion")
        self._roll_back(
            model_version_id=str(version.id),
            number=version.number,
            from_number=self.champion.number,
            reason=reason,
            actor=actor,
        )

    @event(RolledBack)
    def _roll_back(self, model_version_id: str, number: int, from_number: int, reason: str, actor: str) -> None:
        self._promote(model_version_id, number)

    def stop(self, reason: str, actor: str) -> None:
        """Pull the kill switch."""
        self.check_live()
        if self.stopped:
            raise DeploymentAlreadyStopped(f"{self.model_name} is already stopped")
        self._stop(reason=reason, actor=actor)

    @event(Stopped)
    def _stop(self, reason: str, actor: str) -> None:
        self.stopped = True
        self.stop_reason = reason

    def resume(self, reason: str, actor: str) -> None:
        """Serve again after a stop."""
        self.check_live()
        if not self.stopped:
            raise DeploymentNotStopped(f"{self.model_name} is not stopped")
        self._resume(reason=reason, actor=actor)

    @event(Resumed)
    def _resume(self, reason: str, actor: str) -> None:
        self.stopped = False

    def retire(self, reason: str, actor: str) -> None:
        """End serving for good."""
        self.check_live()
        self._retire(reason=reason, actor=actor)

    @event(Retired)
    def _retire(self, reason: str, actor: str) -> None:
        self.retired = True
        self.champion = self.challenger = self.canary = None
