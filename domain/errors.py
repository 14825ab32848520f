"""One error root for the ledger, with subclasses that carry a diagnosis.

Each error names what went wrong in domain words and, where one is to blame, the
offending field (a dotted path such as ``payload.schema.0.name``). The service
maps them to RFC 9457 problem details; the CLI prints them on one line.
"""

from __future__ import annotations

from typing import ClassVar


class LedgerError(Exception):
    """Root of every error the ledger raises on purpose."""

    title = "Ledger error"
    #: True on a class that only names a case of its parent, for callers and tests
    #: to branch on: over HTTP it keeps its parent's problem ``type`` (and title).
    names_a_case: ClassVar[bool] = False

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    @property
    def type_slug(self) -> str:
        """A stable, kebab-case name for the error, used in problem ``type`` URIs."""
        kind = next(c for c in type(self).__mro__ if not c.__dict__.get("names_a_case", False))
        name = kind.__name__
        return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


class InvalidPayload(LedgerError):
    """An event payload cannot be represented in canonical JSON (RFC 8785)."""

    title = "Invalid payload"


class PayloadTooLarge(LedgerError):
    """An event payload is larger than the configured limit."""

    title = "Payload too large"


class UnknownEventType(LedgerError):
    """An event's type (topic) is not one the ledger knows."""

    title = "Unknown event type"


class TamperedEvent(LedgerError):
    """A stored event does not match its seal (hash, fields or format)."""

    title = "Tampered event"


class UnknownSigningKey(LedgerError):
    """A signature names a key id that the ledger does not trust."""

    title = "Unknown signing key"


class VersionConflict(LedgerError):
    """Another writer appended to the aggregate first (optimistic concurrency)."""

    title = "Version conflict"


class NotFound(LedgerError):
    """The requested record does not exist."""

    title = "Not found"


class RuleViolated(LedgerError):
    """A business rule of an aggregate refuses the command."""

    title = "Rule violated"


class Unauthenticated(LedgerError):
    """No credentials, or credentials that do not identify an active principal."""

    title = "Unauthenticated"


class Forbidden(LedgerError):
    """The principal's roles do not allow the action."""

    title = "Forbidden"


class SeparationOfDutiesViolated(Forbidden):
    """The same person may not both produce and approve a model version."""

    title = "Separation of duties violated"


class InvalidStatementSignature(LedgerError):
    """A signed statement does not verify with the signer's registered key."""

    title = "Invalid statement signature"


class ApprovalRequired(LedgerError):
    """A model version cannot be deployed before the approval policy is met."""

    title = "Approval required"


class DeploymentStopped(LedgerError):
    """The deployment was stopped (kill switch); it serves nothing until resumed."""

    title = "Deployment stopped"


# -- Named rules of runs, pipelines, datasets and exports ----------------------
# Each names one case of the error it refines (same HTTP status, title and
# problem type), so callers and tests can tell the rules apart.


class RunAlreadyClaimed(RuleViolated):
    """Another runner claimed the run first (a run is claimed once)."""

    title = "Run already claimed"


class RunNotForRunners(RuleViolated):
    """A client-reported run is executed by its client, never claimed by a runner."""

    names_a_case = True


class RunNotClaimed(RuleViolated):
    """The environment is captured right after the claim, and only then."""

    names_a_case = True


class RunNotHeldByRunner(RuleViolated):
    """Only the runner holding an active run can be declared gone silent on it."""

    names_a_case = True


class RunNotSucceeded(RuleViolated):
    """Only a succeeded run can be reproduced or become a model version."""

    names_a_case = True


class ReproductionAlreadyJudged(RuleViolated):
    """A reproduction gets one verdict (verified or diverged), never a second."""

    names_a_case = True


class RunAlreadyFinished(RuleViolated):
    """A finished (or abandoned) run records nothing more."""

    names_a_case = True


class RunDeleted(RuleViolated):
    """A deleted run records nothing more until it is restored."""

    names_a_case = True


class RunNotDeleted(RuleViolated):
    """Only a deleted run can be restored."""

    names_a_case = True


class ParamAlreadyRecorded(RuleViolated):
    """A run parameter keeps its first value forever."""

    names_a_case = True


class ArtifactAlreadyRecorded(RuleViolated):
    """A run records an artifact name once."""

    names_a_case = True


class UnclaimedRunOnlyCancellable(RuleViolated):
    """A run nobody has claimed cannot have succeeded or failed; it can only be cancelled."""

    names_a_case = True


class RunNotReExecutable(RuleViolated):
    """Only a run a runner executed from a pipeline can be executed again."""

    names_a_case = True


class RunNeedsPipeline(InvalidPayload):
    """A run for a runner says which pipeline to execute."""

    names_a_case = True


class SpecUnchanged(RuleViolated):
    """A new pipeline spec version must differ from the latest one."""

    names_a_case = True


class UnknownSpecVersion(InvalidPayload):
    """The pipeline has no spec version of that number."""

    names_a_case = True


class PipelineKindMismatch(InvalidPayload):
    """A pipeline keeps the kind it was created with."""

    names_a_case = True


class DatasetVersionAlreadyDeprecated(RuleViolated):
    """A dataset version is deprecated once."""

    names_a_case = True


class UnknownReportKind(InvalidPayload):
    """Reports are of the known kinds only (explanations, fairness, reference profile)."""

    names_a_case = True


class ExportAlreadyPacked(RuleViolated):
    """An export's archive is recorded once."""

    names_a_case = True


class ExportNotPacked(RuleViolated):
    """An export is downloaded only after its archive was recorded."""

    names_a_case = True


# -- Named rules of models, deployments, predictions, subjects and principals --
# Each names one case of the error it refines (same HTTP status, title and
# problem type), so callers and tests can tell the rules apart.


class ArtifactNotInRun(InvalidPayload):
    """A model version is registered from an artifact its run recorded."""

    names_a_case = True


class StatementNotForThisVersion(InvalidPayload):
    """A signed statement names another version, artifact, run or approver than the one decided on."""

    names_a_case = True


class AlreadyDecided(RuleViolated):
    """An approver decides on a version once."""

    names_a_case = True


class DecisionsClosed(RuleViolated):
    """Under a policy where a rejection blocks, a rejected version takes no more decisions."""

    names_a_case = True


class FairnessBelowPolicy(RuleViolated):
    """An approval is refused while a group's impact ratio is under the policy's minimum."""

    names_a_case = True


class FairnessReportMissing(RuleViolated):
    """The fairness gate fails closed: with a minimum impact ratio set and protected
    attributes declared, a version without its fairness report is neither approved nor deployed."""

    title = "Fairness report missing"


class VersionOfAnotherModel(InvalidPayload):
    """A deployment serves versions of its own model only."""

    names_a_case = True


class VersionRejected(ApprovalRequired):
    """A rejected version cannot be deployed (when the policy lets a rejection block)."""

    names_a_case = True


class DeploymentRetired(RuleViolated):
    """A retired deployment takes no more changes."""

    names_a_case = True


class AlreadyChampion(RuleViolated):
    """The version asked to become champion already is."""

    names_a_case = True


class InvalidCanaryShare(InvalidPayload):
    """A canary takes a share of traffic strictly between 0 and 1."""

    names_a_case = True


class CanaryNeedsChampion(RuleViolated):
    """A canary shares traffic with a champion, so there must be one."""

    names_a_case = True


class NoChampionToRollBackFrom(RuleViolated):
    """A rollback replaces the champion, so there must be one."""

    names_a_case = True


class NotAPastChampion(RuleViolated):
    """Roll back only to a version that was champion before."""

    names_a_case = True


class DeploymentAlreadyStopped(RuleViolated):
    """The kill switch is pulled once; resume before pulling it again."""

    names_a_case = True


class DeploymentNotStopped(RuleViolated):
    """Only a stopped deployment can be resumed."""

    names_a_case = True


class ModelNotDeployed(RuleViolated):
    """A model that was never deployed serves, and is monitored, by nobody."""

    names_a_case = True


class NotServedInRole(RuleViolated):
    """A logged prediction names a version that did not hold that role of a live deployment when it was made."""

    names_a_case = True


class NoReferenceProfile(RuleViolated):
    """Drift is measured against the version's reference profile, which is computed after registration."""

    names_a_case = True


class NoChampion(RuleViolated):
    """A deployment without a champion serves no predictions."""

    names_a_case = True


class OutcomeAlreadyRecorded(RuleViolated):
    """A prediction's outcome is recorded once."""

    names_a_case = True


class ShadowNotServed(RuleViolated):
    """A challenger's (shadow) prediction was never served: no outcome or override is recorded on it."""

    names_a_case = True


class SubjectErased(RuleViolated):
    """An erased data subject's data is no longer processed, and is erased once."""

    names_a_case = True


class PrincipalAlreadyExists(RuleViolated):
    """Principal names are unique."""

    names_a_case = True


class PrincipalDeactivated(RuleViolated):
    """A deactivated principal is deactivated once and gets no new API keys."""

    names_a_case = True


class RoleAlreadyHeld(RuleViolated):
    """A role is granted to a principal that does not hold it yet."""

    names_a_case = True


class RoleNotHeld(RuleViolated):
    """A role is revoked from a principal that holds it."""

    names_a_case = True


class SigningKeyAlreadyRegistered(RuleViolated):
    """A principal registers a signing key once."""

    names_a_case = True


class SigningKeyNotRegistered(InvalidPayload):
    """A statement is signed with a key its signer registered."""

    names_a_case = True


class SigningKeyNotOwn(Forbidden):
    """A signing key is registered by its owner only, never by someone else (an admin included)."""

    title = "Signing key not own"


class PossessionNotProven(InvalidPayload):
    """A signing key is registered only with the owner's proof of holding its private key."""

    title = "Possession not proven"


class SigningKeyAlreadyRevoked(RuleViolated):
    """A signing key is revoked once."""

    names_a_case = True


class RevokedSigningKey(InvalidStatementSignature):
    """A statement signed with a revoked key is refused."""

    title = "Revoked signing key"


class ProposerCannotConfirm(Forbidden):
    """Four eyes: the admin who proposed a privileged change cannot confirm it."""

    title = "Proposer cannot confirm"


class ChangeNotPending(RuleViolated):
    """A privileged change is confirmed or withdrawn once, while it is pending."""

    names_a_case = True


class ConfirmationRequired(RuleViolated):
    """A privileged act (granting admin or approver, a weaker policy) goes through a proposal
    that another admin confirms; it cannot be done in one step."""

    title = "Confirmation required"


class ApiKeyAlreadyRevoked(RuleViolated):
    """An API key is revoked once."""

    names_a_case = True


class KeyAlreadyInKeyring(RuleViolated):
    """The ledger never signs with a key again once it left (or joined) the keyring."""

    names_a_case = True


class LedgerKeyNotInKeyring(RuleViolated):
    """A revocation names a key id the keyring never held."""

    names_a_case = True


class LedgerKeyStillCurrent(RuleViolated):
    """The current ledger key is revoked only after a rotation has retired it."""

    names_a_case = True


class LedgerKeyAlreadyRevoked(RuleViolated):
    """A ledger key's compromise is recorded once."""

    names_a_case = True


class LedgerKeyRetired(LedgerError):
    """A process holds a ledger key that a rotation retired; it must not sign new events."""

    title = "Ledger key retired"
