"""Signed approval statements and the approval policy.

An approver signs, with their own Ed25519 key and on their own machine, the
canonical JSON (RFC 8785) of a statement naming exactly what is approved. The
service checks the signature against the key the approver registered and keeps
statement and signature in the event, so the approval can be checked by anyone,
without trusting the server (non-repudiation).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from domain.errors import FairnessBelowPolicy, FairnessReportMissing, InvalidPayload
from domain.integrity.canonical import canonical_json
from domain.integrity.keys import load_public_key_pem, verify_signature
from domain.statistics.fairness import DEFAULT_MIN_IMPACT_RATIO, impact_ratio_violations

DECISIONS = ("approve", "reject")
STATEMENT_FIELDS = (
    "model_version_id",
    "model_name",
    "version",
    "artifact_digest",
    "run_digest",
    "decision",
    "reason",
    "approver",
    "signed_at",
)
STATEMENT_TYPE = "mlledger.approval-statement.v1"


def approval_statement(
    *,
    model_version_id: str,
    model_name: str,
    version: int,
    artifact_digest: str,
    run_digest: str,
    decision: str,
    reason: str,
    approver: str,
    signed_at: str,
) -> dict[str, Any]:
    """The statement an approver signs."""
    return {
        "type": STATEMENT_TYPE,
        "model_version_id": model_version_id,
        "model_name": model_name,
        "version": version,
        "artifact_digest": artifact_digest,
        "run_digest": run_digest,
        "decision": decision,
        "reason": reason,
        "approver": approver,
        "signed_at": signed_at,
    }


def statement_message(statement: dict[str, Any]) -> bytes:
    """The exact bytes that are signed: the statement's canonical JSON."""
    return canonical_json(statement, path="statement")


def sign_statement(statement: dict[str, Any], sign: Any) -> str:
    """Sign with ``sign(bytes) -> base64 str`` (e.g. ``domain.integrity.keys.Signer.sign``)."""
    signature: str = sign(statement_message(statement))
    return signature


def statement_verifies(statement: dict[str, Any], signature: str, public_key_pem: str) -> bool:
    """True when ``signature`` is the key's signature of the statement."""
    try:
        base64.b64decode(signature, validate=True)
    except ValueError:
        return False
    return verify_signature(load_public_key_pem(public_key_pem), signature, statement_message(statement))


def check_statement_shape(statement: Any) -> dict[str, Any]:
    """The statement has exactly the expected fields of the expected types."""
    if not isinstance(statement, dict):
        raise InvalidPayload("statement must be an object", field="statement")
    expected = {"type", *STATEMENT_FIELDS}
    missing = sorted(expected - statement.keys())
    extra = sorted(statement.keys() - expected)
    if missing or extra:
        raise InvalidPayload(f"statement fields differ: missing {missing}, unexpected {extra}", field="statement")
    if statement["type"] != STATEMENT_TYPE:
        raise InvalidPayload(f"statement.type must be {STATEMENT_TYPE}", field="statement.type")
    if statement["decision"] not in DECISIONS:
        raise InvalidPayload("statement.decision must be approve or reject", field="statement.decision")
    if not isinstance(statement["reason"], str) or not statement["reason"].strip():
        raise InvalidPayload("statement.reason must say why", field="statement.reason")
    return statement


@dataclass(frozen=True)
class FairnessEvidence:
    """What the ledger knows about a version's fairness when it is approved or deployed.

    ``protected_attributes`` are the ones the datasheets of the version's
    training data declare: when there are any, a fairness report is due.
    ``summary`` is the summary of the version's fairness report, or None while
    it has none (reports are computed in the background after registration).
    """

    protected_attributes: tuple[str, ...] = ()
    summary: Mapping[str, Any] | None = None

    @property
    def report_due(self) -> bool:
        """True when the training data declares protected attributes: fairness must be measured."""
        return bool(self.protected_attributes)


@dataclass(frozen=True)
class ApprovalPolicy:
    """When a model version may be deployed, and what monitoring does about it.

    - ``required_approvals`` distinct approvers must approve;
    - with ``separation_of_duties`` nobody who submitted the source run or
      registered the version may approve it;
    - with ``rejection_blocks`` one rejection blocks the version for good
      (a new version is needed);
    - ``min_impact_ratio``: an approval is refused while the version's fairness
      report shows a group's impact ratio below it (None: fairness does not gate);
    - with ``retrain_on_drift`` a drift alert requests a retraining run on the
      newest version of the training dataset.
    """

    required_approvals: int = 2
    separation_of_duties: bool = True
    rejection_blocks: bool = True
    min_impact_ratio: float | None = DEFAULT_MIN_IMPACT_RATIO
    retrain_on_drift: bool = False

    def check_fairness(self, evidence: FairnessEvidence, *, field: str = "statement.decision") -> None:
        """Refuse (an approval, a deployment) unless fairness is shown to meet the policy's minimum.

        The gate fails closed: with ``min_impact_ratio`` set and protected
        attributes declared, a version without its fairness report is refused
        (:class:`FairnessReportMissing`) rather than waved through; a report
        that shows a group's impact ratio under the minimum is refused too
        (:class:`FairnessBelowPolicy`). Only training data that declares no
        protected attribute, or a policy without a minimum, has nothing to gate on.
        """
        if self.min_impact_ratio is None:
            return
        if evidence.summary is None:
            if evidence.report_due:
                raise FairnessReportMissing(
                    "fairness: the policy requires an impact ratio of at least "
                    f"{self.min_impact_ratio} for the protected attribute(s) "
                    f"{', '.join(evidence.protected_attributes)}, and this version has no fairness report yet "
                    "(reports are computed in the background after registration); try again once it is published",
                    field=field,
                )
            return
        violations = impact_ratio_violations(evidence.summary, self.min_impact_ratio)
        if violations:
            worst = violations[0]
            raise FairnessBelowPolicy(
                f"fairness: group {worst['group']} of {worst['attribute']} has an impact ratio of "
                f"{worst['impact_ratio']:.3f}, below the policy's minimum of {self.min_impact_ratio}; "
                f"{len(violations)} group(s) in all",
                field=field,
            )

    def weakened_by(self, new: ApprovalPolicy) -> list[str]:
        """What ``new`` relaxes compared with this policy (empty when it relaxes nothing).

        Fewer required approvals, separation of duties or blocking rejections
        turned off, a lower minimum impact ratio or none at all: each lets fewer
        people, or less evidence, bring a version to deployment.
        """
        weaker = []
        if new.required_approvals < self.required_approvals:
            weaker.append(f"required_approvals {self.required_approvals} -> {new.required_approvals}")
        for flag in ("separation_of_duties", "rejection_blocks"):
            if getattr(self, flag) and not getattr(new, flag):
                weaker.append(f"{flag} turned off")
        if self.min_impact_ratio is not None and (
            new.min_impact_ratio is None or new.min_impact_ratio < self.min_impact_ratio
        ):
            weaker.append(f"min_impact_ratio {self.min_impact_ratio} -> {new.min_impact_ratio}")
        return weaker

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form, as recorded in events."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ApprovalPolicy:
        """Parse and validate; None gives the default policy."""
        if data is None:
            return cls()
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidPayload(f"unknown policy fields {sorted(unknown)}", field="policy")
        required = data.get("required_approvals", 2)
        if isinstance(required, bool) or not isinstance(required, int) or not 1 <= required <= 10:
            raise InvalidPayload(
                "policy.required_approvals must be between 1 and 10", field="policy.required_approvals"
            )
        flags = {k: data.get(k, True) for k in ("separation_of_duties", "rejection_blocks")}
        flags["retrain_on_drift"] = data.get("retrain_on_drift", False)
        for key, value in flags.items():
            if not isinstance(value, bool):
                raise InvalidPayload(f"policy.{key} must be true or false", field=f"policy.{key}")
        ratio = data.get("min_impact_ratio", DEFAULT_MIN_IMPACT_RATIO)
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1):
            raise InvalidPayload(
                "policy.min_impact_ratio must be a number in (0, 1], or null", field="policy.min_impact_ratio"
            )
        return cls(
            required,
            flags["separation_of_duties"],
            flags["rejection_blocks"],
            None if ratio is None else float(ratio),
            flags["retrain_on_drift"],
        )
