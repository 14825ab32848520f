"""Stored events stay readable: every event topic, the aggregate that owns it and its fields are pinned.

A ledger written by an earlier build is read by topic and aggregate type name,
never by module path, so moving a class is free; renaming a topic or changing
an event's fields is not (that needs a new event version with an upcaster, and
a new line here).
"""

from __future__ import annotations

import dataclasses

from domain import catalog
from domain.aggregate import aggregate_type_of, event_class

_LIBRARY_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}

STORED_EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mlledger.apikey.Issued.v1": ("ApiKey", ("actor", "digest", "label", "principal_id")),
    "mlledger.apikey.Revoked.v1": ("ApiKey", ("actor", "reason")),
    "mlledger.code.Registered.v1": ("CodeVersion", ("actor", "archive_digest", "commit", "entrypoint", "repository")),
    "mlledger.dataset.Created.v1": ("Dataset", ("actor", "name")),
    "mlledger.dataset.VersionAdded.v1": ("Dataset", ("actor", "dataset_version_id", "number")),
    "mlledger.datasetversion.Deprecated.v1": ("DatasetVersion", ("actor", "reason")),
    "mlledger.datasetversion.DescriptionSet.v1": ("DatasetVersion", ("actor", "description")),
    "mlledger.datasetversion.TagsSet.v1": ("DatasetVersion", ("actor", "tags")),
    "mlledger.run.DescriptionSet.v1": ("Run", ("actor", "description")),
    "mlledger.datasetversion.Registered.v1": (
        "DatasetVersion",
        (
            "actor",
            "datasheet",
            "digest",
            "format",
            "name",
            "number",
            "profile",
            "row_count",
            "schema",
            "size",
            "source",
        ),
    ),
    "mlledger.deployment.CanarySet.v1": ("Deployment", ("actor", "model_version_id", "number", "share")),
    "mlledger.deployment.ChallengerSet.v1": ("Deployment", ("actor", "model_version_id", "number")),
    "mlledger.deployment.ChampionSet.v1": ("Deployment", ("actor", "model_version_id", "number", "reason")),
    "mlledger.deployment.Created.v1": ("Deployment", ("actor", "model_name")),
    "mlledger.deployment.Resumed.v1": ("Deployment", ("actor", "reason")),
    "mlledger.deployment.Retired.v1": ("Deployment", ("actor", "reason")),
    "mlledger.deployment.RolledBack.v1": (
        "Deployment",
        ("actor", "from_number", "model_version_id", "number", "reason"),
    ),
    "mlledger.deployment.Stopped.v1": ("Deployment", ("actor", "reason")),
    "mlledger.experiment.Created.v1": ("Experiment", ("actor", "name", "tags")),
    "mlledger.experiment.Deleted.v1": ("Experiment", ("actor",)),
    "mlledger.experiment.ModelFiled.v1": ("Experiment", ("actor", "model_id")),
    "mlledger.experiment.Restored.v1": ("Experiment", ("actor",)),
    "mlledger.experiment.RunFiled.v1": ("Experiment", ("actor", "run_id")),
    "mlledger.experiment.TagSet.v1": ("Experiment", ("actor", "key", "value")),
    "mlledger.modellabels.AliasSet.v1": ("ModelLabels", ("actor", "alias", "version")),
    "mlledger.modellabels.Created.v1": ("ModelLabels", ("actor", "model_name")),
    "mlledger.modellabels.DescriptionSet.v1": ("ModelLabels", ("actor", "description", "version")),
    "mlledger.modellabels.StageSet.v1": ("ModelLabels", ("actor", "stage", "version")),
    "mlledger.modellabels.TagSet.v1": ("ModelLabels", ("actor", "key", "value", "version")),
    "mlledger.loggedmodel.Created.v1": (
        "LoggedModel",
        ("actor", "experiment_id", "model_type", "name", "params", "source_run_id", "tags"),
    ),
    "mlledger.loggedmodel.Deleted.v1": ("LoggedModel", ("actor",)),
    "mlledger.loggedmodel.Finalized.v1": ("LoggedModel", ("actor", "status")),
    "mlledger.loggedmodel.ParamsLogged.v1": ("LoggedModel", ("actor", "params")),
    "mlledger.loggedmodel.TagsSet.v1": ("LoggedModel", ("actor", "tags")),
    "mlledger.run.Deleted.v1": ("Run", ("actor",)),
    "mlledger.run.InputsLogged.v1": ("Run", ("actor", "datasets", "model_ids")),
    "mlledger.run.OutputsLogged.v1": ("Run", ("actor", "models")),
    "mlledger.run.Filed.v1": ("Run", ("actor", "experiment_id")),
    "mlledger.run.Restored.v1": ("Run", ("actor",)),
    "mlledger.run.TagsSet.v1": ("Run", ("actor", "tags")),
    "mlledger.export.Created.v1": ("Export", ("actor", "events", "files", "model_name", "scope", "shared_with")),
    "mlledger.export.Downloaded.v1": ("Export", ("actor", "by")),
    "mlledger.export.Packed.v1": ("Export", ("actor", "bundle_digest", "size")),
    "mlledger.keyring.Established.v1": ("LedgerKeyring", ("actor", "key_id", "public_key_pem")),
    "mlledger.keyring.Rotated.v1": (
        "LedgerKeyring",
        ("actor", "key_id", "previous_key_id", "public_key_pem", "reason"),
    ),
    "mlledger.keyring.Revoked.v1": ("LedgerKeyring", ("actor", "compromised_since", "key_id", "reason")),
    "mlledger.model.Created.v1": ("Model", ("actor", "name", "policy")),
    "mlledger.model.PolicyChanged.v1": ("Model", ("actor", "policy")),
    "mlledger.model.VersionAdded.v1": ("Model", ("actor", "model_version_id", "number")),
    "mlledger.modelversion.ApprovalGranted.v1": (
        "ModelVersion",
        ("actor", "approver", "key_id", "signature", "statement"),
    ),
    "mlledger.modelversion.ApprovalRejected.v1": (
        "ModelVersion",
        ("actor", "approver", "key_id", "signature", "statement"),
    ),
    "mlledger.modelversion.Registered.v1": (
        "ModelVersion",
        (
            "actor",
            "artifact_digest",
            "artifact_name",
            "input_schema",
            "model_name",
            "number",
            "run_digest",
            "run_id",
            "run_submitted_by",
        ),
    ),
    "mlledger.monitor.Created.v1": ("Monitor", ("actor", "model_name")),
    "mlledger.monitor.DriftDetected.v1": (
        "Monitor",
        (
            "actor",
            "drifted_features",
            "model_name",
            "model_version_id",
            "number",
            "retraining_run_id",
            "statistics",
            "thresholds",
            "window",
        ),
    ),
    "mlledger.pipeline.Created.v1": ("Pipeline", ("actor", "kind", "name")),
    "mlledger.pipeline.SpecVersioned.v1": ("Pipeline", ("actor", "number", "spec", "spec_digest")),
    "mlledger.prediction.Made.v1": (
        "Prediction",
        (
            "actor",
            "explanation",
            "input",
            "input_ciphertext",
            "input_digest",
            "input_key_id",
            "latency_ms",
            "model_name",
            "model_version_id",
            "number",
            "output",
            "reason_codes",
            "request_id",
            "role",
            "shadow_of",
            "subject_id",
        ),
    ),
    "mlledger.prediction.Logged.v1": (
        "Prediction",
        (
            "actor",
            "explanation",
            "input",
            "input_ciphertext",
            "input_digest",
            "input_key_id",
            "latency_ms",
            "model_name",
            "model_version_id",
            "number",
            "output",
            "predicted_at",
            "reason_codes",
            "request_id",
            "role",
            "shadow_of",
            "subject_id",
        ),
    ),
    "mlledger.prediction.OutcomeRecorded.v1": ("Prediction", ("actor", "outcome")),
    "mlledger.prediction.Overridden.v1": ("Prediction", ("actor", "decision", "reason")),
    "mlledger.bootstrap.Closed.v1": ("Bootstrap", ("actor", "reason")),
    "mlledger.bootstrap.Opened.v1": ("Bootstrap", ("actor", "admin_id")),
    "mlledger.privilegedchange.Confirmed.v1": ("PrivilegedChange", ("actor",)),
    "mlledger.privilegedchange.Proposed.v1": ("PrivilegedChange", ("actor", "details", "kind", "reason")),
    "mlledger.privilegedchange.Withdrawn.v1": ("PrivilegedChange", ("actor", "reason")),
    "mlledger.principal.Deactivated.v1": ("Principal", ("actor", "reason")),
    "mlledger.principal.Registered.v1": ("Principal", ("actor", "kind", "name", "roles")),
    "mlledger.principal.RoleGranted.v1": ("Principal", ("actor", "role")),
    "mlledger.principal.RoleRevoked.v1": ("Principal", ("actor", "role")),
    "mlledger.principal.SigningKeyPossessionProven.v1": ("Principal", ("actor", "key_id", "proof", "statement")),
    "mlledger.principal.SigningKeyRegistered.v1": ("Principal", ("actor", "key_id", "public_key_pem")),
    "mlledger.principal.SigningKeyRevoked.v1": ("Principal", ("actor", "key_id", "reason")),
    "mlledger.report.Created.v1": ("Report", ("actor", "kind", "model_name", "model_version_id", "number")),
    "mlledger.report.Published.v1": ("Report", ("actor", "attachments", "computed_from", "summary")),
    "mlledger.run.Abandoned.v1": ("Run", ("actor", "reason", "runner_id")),
    "mlledger.run.ArtifactRecorded.v1": ("Run", ("actor", "digest", "media_type", "name", "size")),
    "mlledger.run.Claimed.v1": ("Run", ("actor", "host", "runner_id")),
    "mlledger.run.ExecutionAttested.v1": (
        "Run",
        ("actor", "key_id", "node_environment", "principal_id", "signature", "statement"),
    ),
    "mlledger.run.Reattached.v1": ("Run", ("actor", "previous_runner_id", "runner_id")),
    "mlledger.run.EnvironmentCaptured.v1": (
        "Run",
        ("actor", "device", "device_note", "environment", "environment_digest"),
    ),
    "mlledger.run.Finished.v1": ("Run", ("actor", "error", "status")),
    "mlledger.run.MetricsLogged.v1": ("Run", ("actor", "metrics")),
    "mlledger.run.ParamsLogged.v1": ("Run", ("actor", "params")),
    "mlledger.run.ReproductionDiverged.v1": ("Run", ("actor", "differences", "reproduction_run_id")),
    "mlledger.run.ReproductionVerified.v1": ("Run", ("actor", "details", "method", "reproduction_run_id", "tolerance")),
    "mlledger.run.ResourcesRecorded.v1": ("Run", ("actor", "resources")),
    "mlledger.run.Requested.v1": (
        "Run",
        (
            "actor",
            "code_version_id",
            "dataset_version_ids",
            "device",
            "mode",
            "name",
            "params",
            "pipeline_id",
            "pipeline_version",
            "reproduces",
            "seed",
            "spec_digest",
        ),
    ),
    "mlledger.subject.Erased.v1": ("Subject", ("actor", "key_id", "reason")),
    "mlledger.subject.KeyIssued.v1": ("Subject", ("actor", "key_id", "subject_id")),
}


def test_every_event_type_is_pinned_and_nothing_else_is_registered() -> None:
    registered = {
        event.TOPIC for aggregate in catalog.AGGREGATES for event in vars(aggregate).values() if hasattr(event, "TOPIC")
    }

    assert registered == set(STORED_EVENTS)


def test_each_pinned_topic_keeps_its_aggregate_and_its_fields() -> None:
    found = {
        topic: (
            aggregate_type_of(topic),
            tuple(sorted(f.name for f in dataclasses.fields(event_class(topic)) if f.name not in _LIBRARY_FIELDS)),
        )
        for topic in STORED_EVENTS
    }

    assert found == STORED_EVENTS
