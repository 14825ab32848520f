"""Alembic migrations for every read-model table the project owns.

The event store's own table (``stored_events``) belongs to the eventsourcing
library, which creates it with the exact layout its recorders need; ``mlledger
migrate`` runs these migrations and then lets the library create its table.
"""
