"""The ledger application: its commands, authentication, dataset intake and run provenance.

Routers, the CLI and the runners call :class:`service.application.ledger.Ledger`;
the aggregates of :mod:`domain` enforce the rules; :mod:`service.store` seals and keeps.
"""
