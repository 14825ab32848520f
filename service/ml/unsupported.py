"""The error of a model file that cannot be served, shared by the loaders of every format."""

from __future__ import annotations

from domain.errors import LedgerError


class UnsupportedModel(LedgerError):
    """A model artifact cannot be served: unknown format, unreadable, or inconsistent with its run's details."""

    title = "Unsupported model"
