"""Where the ledger keeps things: the sealed event store, the database wiring, keys, blobs and operational tables.

See ``README.md`` beside this file for every eventsourcing internal this package overrides.
"""
