"""Everything of ML Ledger that touches the outside world."""
