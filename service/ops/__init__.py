"""Long-running and whole-ledger operations: the projector loop, verification, synthetic workloads."""
