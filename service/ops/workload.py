"""Synthetic ledger traffic for benchmarks, tests and load checks.

It goes through the real application (aggregates, sealing, chaining, the event
store), so what it measures and exercises is what production does.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any

from domain.dataset import DatasetVersion
from domain.principal import Principal
from domain.roles import Role
from service.application.ledger import Ledger

ROLE_CYCLE = [Role.AUDITOR.value, Role.OPERATOR.value, Role.APPROVER.value, Role.PREDICTOR.value]


def dataset(index: int, actor: str, tag: str = "") -> DatasetVersion:
    """The first version of a plausible dataset (its own name) with a deterministic digest."""
    digest = "sha256:" + hashlib.sha256(f"dataset-{index}".encode()).hexdigest()
    return DatasetVersion(
        name=f"credit-{tag}{index}",
        number=1,
        digest=digest,
        size=1_000 + index,
        format="csv",
        schema=[
            {"name": "age", "type": "int"},
            {"name": "income", "type": "float"},
            {"name": "approved", "type": "bool"},
        ],
        row_count=100 + index,
        profile=[],
        datasheet={"motivation": "credit scoring", "protected_attributes": ["age"]},
        source=f"s3://bucket/credit/{index}.csv",
        actor=actor,
    )


def events_for_one_principal(index: int, actor: str, depth: int, tag: str = "") -> Principal:
    """A principal with ``depth`` events: registration then role grants/revokes."""
    principal = Principal(name=f"user-{tag}{index}", kind="user", roles=[Role.DATA_SCIENTIST.value], actor=actor)
    for step in range(depth - 1):
        role = ROLE_CYCLE[(step // 2) % len(ROLE_CYCLE)]
        if step % 2 == 0:
            principal.grant_role(role, actor=actor)
        else:
            principal.revoke_role(role, actor=actor)
    return principal


def append_events(
    ledger: Ledger,
    count: int,
    *,
    batch: int = 1,
    depth: int = 10,
    actor: str = "user:workload",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Append ``count`` events: principals of ``depth`` events and some datasets.

    ``batch`` is how many events go into one transaction (one ``save``).
    Returns the number of events written.
    """
    written = 0
    index = 0
    tag = uuid.uuid4().hex[:8] + "-"  # principal names are unique; each call gets its own
    pending: list[Any] = []
    pending_events = 0
    while written + pending_events < count:
        remaining = count - written - pending_events
        if index % 10 == 9 or remaining < depth:
            aggregate: Any = dataset(index, actor, tag)
            size = 1
        else:
            aggregate = events_for_one_principal(index, actor, depth, tag)
            size = depth
        index += 1
        if batch == 1:
            # One transaction per event: save after each command.
            events = aggregate.collect_events()
            for event in events:
                ledger.save(event)
                written += 1
                if progress is not None and written % 1000 == 0:
                    progress(written)
            continue
        pending.append(aggregate)
        pending_events += size
        if pending_events >= batch:
            ledger.save(*pending)
            written += pending_events
            pending, pending_events = [], 0
            if progress is not None:
                progress(written)
    if pending:
        ledger.save(*pending)
        written += pending_events
    return written
