"""Cursor pagination of list endpoints.

Every list is in a stable order (a unique sort key). A page is at most
``limit`` items (default 100, at most 1000); when more follow, the response
carries an opaque ``cursor`` for the next page in the ``X-Next-Cursor`` header
and as an RFC 8288 ``Link: <...>; rel="next"`` URL. The cursor is the sort key
of the page's last item, so items recorded while a client pages through a list
never make it see an item twice.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request, Response

from domain.errors import InvalidPayload

PAGE_DEFAULT = 100
PAGE_MAX = 1000
NEXT_CURSOR_HEADER = "X-Next-Cursor"
T = TypeVar("T")


def encode_cursor(kind: str, key: Sequence[Any]) -> str:
    """The opaque cursor after the item whose sort key is ``key`` in list ``kind``."""
    raw = json.dumps({"l": kind, "k": list(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> list[Any]:
    """The sort key inside ``cursor``; a cursor of another list, or no cursor at all, is refused."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidPayload("the cursor is not one this service gave", field="cursor") from None
    if not isinstance(data, dict) or data.get("l") != kind or not isinstance(data.get("k"), list):
        raise InvalidPayload("the cursor does not belong to this list", field="cursor")
    key: list[Any] = data["k"]
    return key


@dataclass(frozen=True)
class PageRequest:
    """What the caller asked: how many items, after which cursor."""

    limit: int
    cursor: str | None

    def after(self, kind: str) -> list[Any] | None:
        """The sort key to continue after (None: from the start)."""
        return None if self.cursor is None else decode_cursor(kind, self.cursor)

    def page(
        self, request: Request, response: Response, kind: str, items: list[T], key: Callable[[T], Sequence[Any]]
    ) -> list[T]:
        """The first ``limit`` of ``items`` (fetched with ``limit + 1``), with the next cursor in the headers."""
        shown = items[: self.limit]
        if len(items) > self.limit:
            cursor = encode_cursor(kind, key(shown[-1]))
            response.headers[NEXT_CURSOR_HEADER] = cursor
            response.headers["Link"] = f'<{request.url.include_query_params(cursor=cursor)}>; rel="next"'
        return shown


def page_request(
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX, description="items per page (at most 1000)")] = PAGE_DEFAULT,
    cursor: Annotated[str | None, Query(max_length=2000, description="the X-Next-Cursor of the previous page")] = None,
) -> PageRequest:
    """The paging parameters of a list endpoint."""
    return PageRequest(limit=limit, cursor=cursor)


PageDep = Annotated[PageRequest, Depends(page_request)]
