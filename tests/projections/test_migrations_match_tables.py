"""The migrations create exactly the tables, columns, types, constraints and
indexes the projections declare, on SQLite and on PostgreSQL: autogenerate finds
nothing to change after ``alembic upgrade head``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from projections import audit_trail, registry
from service.bootstrap import Services, all_projections
from service.store.tables import metadata

# Tables that are not read models: the event store's and Alembic's own.
_NOT_READ_MODELS = {"stored_events", "mlledger_events", "alembic_version"}


def _include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    return not (type_ == "table" and name in _NOT_READ_MODELS)


def test_the_migrated_database_matches_the_declared_tables(services: Services) -> None:
    with services.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": _include_name})
        differences = compare_metadata(context, metadata)

    assert differences == []


def test_every_projection_table_is_declared_in_the_shared_metadata() -> None:
    declared = {t.name for p in all_projections() for t in p.tables}

    assert {t.name for t in registry.Registry.tables} | {t.name for t in audit_trail.AuditTrail.tables} <= declared
    assert declared <= set(metadata.tables)


def test_the_migrated_database_holds_every_registry_and_audit_index(services: Services) -> None:
    wanted = {
        index.name for table in (*registry.Registry.tables, *audit_trail.AuditTrail.tables) for index in table.indexes
    }
    with services.engine.connect() as conn:
        inspector = sa.inspect(conn)
        present = {
            index["name"]
            for table in (*registry.Registry.tables, *audit_trail.AuditTrail.tables)
            for index in inspector.get_indexes(table.name)
        }

    assert len(wanted) >= 10
    assert wanted <= present
