"""What makes the ledger tamper-evident.

Canonical JSON, keys, sealing, the Merkle log, checkpoints, provenance and verification.
"""
