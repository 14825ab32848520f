"""Named series: a dataset, a pipeline or a model name owns numbered versions.

The series aggregate has a deterministic id derived from its kind and name, so
two writers adding "version 3" of the same name race on one aggregate and
optimistic concurrency lets exactly one of them win.
"""

from __future__ import annotations

import uuid

from domain.errors import InvalidPayload

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mlledger:series")
NAME_MAX = 200


def series_id(kind: str, name: str) -> uuid.UUID:
    """The id of the series of ``kind`` called ``name``."""
    return uuid.uuid5(NAMESPACE, f"{kind}:{name}")


def check_name(name: object, field: str = "name") -> str:
    """Names are 1..200 printable characters without slashes or surrounding spaces."""
    if not isinstance(name, str) or not name or name != name.strip() or len(name) > NAME_MAX:
        raise InvalidPayload(f"{field} must be 1 to {NAME_MAX} characters with no surrounding spaces", field=field)
    if "/" in name or not name.isprintable():
        raise InvalidPayload(f"{field} may not contain '/' or control characters", field=field)
    return name
