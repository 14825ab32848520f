"""The batch thread, as the serving modules know it: see :mod:`service.common.batching`."""

from __future__ import annotations

from service.common.batching import BatchThread, WriterStopped

__all__ = ["BatchThread", "WriterStopped"]
