"""Statistics the ledger records about data and models: profiles, drift, fairness, monitoring series."""
