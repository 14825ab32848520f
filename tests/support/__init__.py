"""What the tests share: isolated ledgers (:mod:`support.ledger`) and the worlds the end-to-end tests act in."""
