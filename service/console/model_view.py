"""What the model page shows, assembled from the read models: approvals with
their signatures checked again here, and the lineage as a graph.

A signature is checked against the key the approver registered (the key id
the approval names), over the canonical JSON of the recorded statement; the
statement must also name this very version and artifact. Nothing is taken on
the server's word: the page re-does the check a regulator would do.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from domain.approval import statement_verifies
from domain.errors import LedgerError
from projections import audit_queries as aq
from projections import registry_queries as q
from service.console.svg import Graph, Node

VALID, INVALID, UNKNOWN_KEY = "valid", "invalid", "unknown key"
DEPLOYING_ACTIONS = ("champion", "challenger", "canary", "rollback")


@dataclass(frozen=True)
class ApprovalView:
    """One signed decision and the result of checking it."""

    approval: q.ApprovalPublic
    approver_name: str
    reason: str
    signed_at: str
    signature_status: str
    """``valid``, ``invalid`` or ``unknown key``."""
    names_this_version: bool
    """The statement names this version's id and artifact digest."""

    @property
    def trustworthy(self) -> bool:
        """A valid signature over a statement about exactly this version."""
        return self.signature_status == VALID and self.names_this_version


def signature_status(approval: q.ApprovalPublic, approver: q.PrincipalPublic | None) -> str:
    """Check the approval's signature with the approver's registered key of its key id."""
    keys = {k.key_id: k.public_key_pem for k in approver.signing_keys} if approver else {}
    pem = keys.get(approval.key_id)
    if pem is None:
        return UNKNOWN_KEY
    try:
        return VALID if statement_verifies(approval.statement, approval.signature, pem) else INVALID
    except (LedgerError, ValueError, TypeError):
        return INVALID


def approval_views(conn: Connection, version: q.ModelVersionPublic) -> list[ApprovalView]:
    """The version's approvals and rejections, oldest first, each checked."""
    views = []
    people: dict[str, q.PrincipalPublic | None] = {}
    for approval in q.approvals(conn, version.id):
        if approval.approver not in people:
            people[approval.approver] = q.principal(conn, approval.approver)
        approver = people[approval.approver]
        statement = approval.statement
        views.append(
            ApprovalView(
                approval=approval,
                approver_name=approver.name if approver else approval.approver,
                reason=str(statement.get("reason", "")),
                signed_at=str(statement.get("signed_at", "")),
                signature_status=signature_status(approval, approver),
                names_this_version=statement.get("model_version_id") == version.id
                and statement.get("artifact_digest") == version.artifact_digest,
            )
        )
    return views


def lineage_graph(lineage: aq.Lineage) -> Graph:
    """Datasets, code and pipeline -> run -> model version -> the deployments of this version."""
    graph = Graph()
    inputs = [
        Node(f"ds:{d.id}", "dataset", f"dataset {d.name} v{d.number}", f"{d.digest[:19]}… {d.row_count} rows")
        for d in lineage.datasets
    ]
    if lineage.code_version is not None:
        code = lineage.code_version
        inputs.append(Node(f"code:{code.id}", "code", f"code {code.commit[:12]}", code.repository))
    if lineage.pipeline is not None:
        spec = lineage.pipeline
        inputs.append(Node(f"pipe:{spec.name}", "pipeline", f"pipeline {spec.name} v{spec.number}", spec.kind))
    version = lineage.version
    version_node = Node(
        f"mv:{version.id}",
        "version",
        f"{version.model_name} v{version.number}",
        f"{version.state} · {version.artifact_digest[:19]}…",
    )
    if inputs:
        graph.columns.append(inputs)
    if lineage.run is not None:
        run = lineage.run
        run_node = Node(f"run:{run.id}", "run", f"run {run.name or run.id[:8]}", f"{run.status} · seed {run.seed}")
        graph.columns.append([run_node])
        graph.edges += [(node.id, run_node.id) for node in inputs]
        graph.edges.append((run_node.id, version_node.id))
    else:
        graph.edges += [(node.id, version_node.id) for node in inputs]
    graph.columns.append([version_node])
    changes = [c for c in lineage.deployment_history if c.model_version_id == version.id]
    if changes:
        shown = changes[-6:]
        deployments = [
            Node(
                f"dep:{c.notification_id}",
                "deployment",
                c.action + (f" {c.share:.0%}" if c.action == "canary" and c.share else ""),
                c.recorded_at[:19] + "Z",
            )
            for c in shown
        ]
        graph.columns.append(deployments)
        graph.edges += [(version_node.id, node.id) for node in deployments]
    return graph
