"""A bound on JSON request bodies (uploads have their own, streamed limit).

A JSON body is parsed whole in memory, so one declared larger than
``MLLEDGER_MAX_JSON_BYTES`` is refused with 413 before it is read, and one sent
without a declared length is cut off with 413 as soon as it exceeds the bound.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import problem

JSON_TYPES = (b"application/json", b"application/problem+json")


class BodyTooLarge(HTTPException):
    """Raised inside the app when a streamed JSON body passes the bound (answered as 413 problem+json)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _detail(limit))


class JsonBodyLimit:
    """ASGI middleware: 413 problem+json for JSON bodies over ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if kind not in JSON_TYPES:
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = problem(413, "Payload too large", _detail(self.limit), "payload-too-large", field="body")
        await answer(scope, receive, send)


def _detail(limit: int) -> str:
    return f"the JSON body exceeds the limit of {limit} bytes (MLLEDGER_MAX_JSON_BYTES)"
