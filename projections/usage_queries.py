"""What runs used and what that cost, read from the registry.

A run's resources are kept as recorded (``reg_runs.resources``); its cost is
never stored, because it depends on the rates the service is configured with
now: every answer prices the recorded figures at the rates given, with the
exact arithmetic of :mod:`domain.usage`, and says which rates it used.

Usage over a window counts the runs that *finished* in it (``since`` included,
``until`` excluded; either may be left open) and that recorded resources,
grouped by the model their versions were registered in, by the principal who
requested them, or by their pipeline. A run whose versions belong to two models
counts in both groups; a run with no model (or no pipeline) counts in the group
whose key is null, so the groups of one answer add up to every run in the window.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from domain.errors import InvalidPayload
from domain.usage import Rates, amount, cost, gb_hours, priced
from projections import registry as r
from projections.audit_queries import normalize_time

GROUPS = ("model", "principal", "pipeline")


class CostPublic(BaseModel):
    """A cost at the configured rates: the amount as a decimal string, its currency and the rates used."""

    amount: str
    currency: str
    rates: dict[str, str]


def run_cost(resources: Mapping[str, Any] | None, rates: Rates) -> CostPublic | None:
    """What ``resources`` cost at ``rates``; None for a run that recorded none."""
    if resources is None:
        return None
    return CostPublic(**priced(resources, rates), rates=rates.to_json())


class UsageGroup(BaseModel):
    """The runs of one group: how many, what they used and what that cost."""

    key: str | None
    """Model name, principal id or pipeline name; null for the runs that have none."""
    name: str | None
    """How the group reads (a principal's name; the key itself otherwise)."""
    runs: int
    cpu_seconds: float
    gpu_seconds: float
    gb_hours: float
    cost: str
    """The exact sum of the runs' costs, rounded once (a decimal string)."""


class UsagePublic(BaseModel):
    """Usage and cost per group over the runs that finished in a window."""

    since: str | None
    until: str | None
    group_by: str
    currency: str
    rates: dict[str, str]
    groups: list[UsageGroup]
    total: UsageGroup


class _Sum:
    """Running totals of one group, kept as exact decimals until the answer is written."""

    def __init__(self) -> None:
        self.runs = 0
        self.cpu = self.gpu = self.gb_hours = self.cost = Decimal(0)

    def add(self, resources: Mapping[str, Any], rates: Rates) -> None:
        self.runs += 1
        self.cpu += Decimal(str(resources.get("cpu_seconds", 0)))
        self.gpu += Decimal(str(resources.get("gpu_seconds", 0)))
        self.gb_hours += gb_hours(resources)
        self.cost += cost(resources, rates)

    def public(self, key: str | None, name: str | None) -> UsageGroup:
        return UsageGroup(
            key=key,
            name=name,
            runs=self.runs,
            cpu_seconds=float(self.cpu),
            gpu_seconds=float(self.gpu),
            gb_hours=float(self.gb_hours),
            cost=str(amount(self.cost)),
        )


def check_window(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """The window's ends in the stored time form; refuses a malformed time or an empty window."""
    start = None if since is None else normalize_time(since, "since")
    end = None if until is None else normalize_time(until, "until")
    if start is not None and end is not None and start >= end:
        raise InvalidPayload("since must be before until", field="since")
    return start, end


def _runs_in(conn: Connection, start: str | None, end: str | None, group_by: str) -> list[tuple[str | None, str]]:
    """(group key, resources JSON) of every run with resources that finished in the window."""
    t = r.reg_runs
    where: list[sa.ColumnElement[bool]] = [t.c.resources.is_not(None), t.c.finished_at.is_not(None)]
    if start is not None:
        where.append(t.c.finished_at >= start)
    if end is not None:
        where.append(t.c.finished_at < end)
    if group_by == "model":
        v = r.reg_model_versions
        models = sa.select(v.c.run_id, v.c.model_name).distinct().subquery()
        query = sa.select(models.c.model_name, t.c.resources).select_from(
            t.outerjoin(models, models.c.run_id == t.c.id)
        )
    else:
        column = t.c.submitted_by if group_by == "principal" else t.c.pipeline_name
        query = sa.select(column, t.c.resources)
    return [(row[0], row[1]) for row in conn.execute(query.where(*where).order_by(t.c.finished_at, t.c.id))]


def usage(
    conn: Connection, rates: Rates, *, group_by: str, since: str | None = None, until: str | None = None
) -> UsagePublic:
    """Runs, CPU and GPU seconds, GB-hours and cost per group over the runs that finished in the window."""
    if group_by not in GROUPS:
        raise InvalidPayload(f"group_by must be one of {', '.join(GROUPS)}", field="group_by")
    start, end = check_window(since, until)
    rows = _runs_in(conn, start, end, group_by)
    sums: dict[str | None, _Sum] = defaultdict(_Sum)
    for key, text in rows:
        sums[key].add(json.loads(text), rates)
    # A run in two models' groups counts once in the total.
    total = _Sum()
    for _, text in rows if group_by != "model" else _runs_in(conn, start, end, "pipeline"):
        total.add(json.loads(text), rates)
    names: dict[str, str] = {}
    if group_by == "principal" and sums:
        p = r.reg_principals
        ids = [key for key in sums if key is not None]
        names = {row.id: row.name for row in conn.execute(sa.select(p.c.id, p.c.name).where(p.c.id.in_(ids)))}
    ordered = sorted(sums.items(), key=lambda item: (item[0] is None, -item[1].cost, item[0] or ""))
    return UsagePublic(
        since=start,
        until=end,
        group_by=group_by,
        currency=rates.currency,
        rates=rates.to_json(),
        groups=[found.public(key, names.get(key, key) if key is not None else None) for key, found in ordered],
        total=total.public(None, "total"),
    )


def version_costs(conn: Connection, model_name: str, rates: Rates) -> dict[str, CostPublic]:
    """Each version of the model whose run recorded resources: version id -> the cost of its run."""
    v, t = r.reg_model_versions, r.reg_runs
    query = (
        sa.select(v.c.id, t.c.resources)
        .join(t, t.c.id == v.c.run_id)
        .where(v.c.model_name == model_name, t.c.resources.is_not(None))
    )
    costs: dict[str, CostPublic] = {}
    for version_id, text in conn.execute(query):
        found = run_cost(json.loads(text), rates)
        if found is not None:
            costs[version_id] = found
    return costs
