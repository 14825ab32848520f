"""What a caller knows of the state a process remembers (deployments, API keys, principals).

A process keeps what it read from the ledger, but a stop, a revocation or a
role change recorded by any process must apply at once. So what it remembers
is used only after a query that started after the request arrived found
nothing newer; a caller that already ran such a query for a whole batch says
so with :attr:`Remembered.CURRENT`, and is not asked again.
"""

from __future__ import annotations

import enum


class Remembered(enum.Enum):
    """What the caller knows of the deployments this process remembers."""

    UNCHECKED = "unchecked"  # nothing: read each (one shared read per model, started after the request arrived)
    CURRENT = "current"  # current: a query that started after every request arrived found nothing newer
