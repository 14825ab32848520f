"""Alembic environment: runs against the URL and schema from MLLEDGER_ settings."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from service.settings import Settings
from service.store.persistence import create_engine
from service.store.tables import metadata

config = context.config
settings: Settings = config.attributes.get("settings") or Settings()


def run_migrations_online() -> None:
    engine = create_engine(settings)
    with engine.connect() as connection:
        schema = None
        if connection.dialect.name == "postgresql":
            schema = settings.database_schema
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            connection.execute(sa.text(f'SET search_path TO "{schema}"'))
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    engine.dispose()


run_migrations_online()
