"""Command handlers of the ledger, grouped by what they record."""
