"""Annotations: tags and descriptions that people attach to runs, dataset versions
and model versions. They describe a record; they never change what it governs
(a tag on a model version does not approve it), so they may be set after the
record is final, and each change is a signed event like any other."""

from __future__ import annotations

from typing import Any

from domain.errors import InvalidPayload
from domain.experiment import check_tag

DESCRIPTION_MAX = 20_000
TAGS_PER_CALL_MAX = 100


def check_tags(tags: Any) -> dict[str, str]:
    """A non-empty mapping of at most 100 tags, each a key of 1 to 250 characters and a string value."""
    if not isinstance(tags, dict) or not tags:
        raise InvalidPayload("tags must be a non-empty object of string values", field="tags")
    if len(tags) > TAGS_PER_CALL_MAX:
        raise InvalidPayload(f"at most {TAGS_PER_CALL_MAX} tags at a time", field="tags")
    return dict(check_tag(key, value) for key, value in tags.items())


def check_description(description: Any) -> str:
    """A description is a string of at most 20,000 characters (empty clears it)."""
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX:
        raise InvalidPayload(
            f"description must be a string of at most {DESCRIPTION_MAX} characters", field="description"
        )
    return description
