"""Refuse request bodies above a bound before the app reads them: an ASGI middleware for the demo's server.

    from demo import body_limit
    demo.launch(app_kwargs={"middleware": [body_limit.middleware(max_file_size)]})

Gradio (through Starlette and FastAPI) reads and parses a JSON request body
whole before any handler runs, so a 50 MiB inline `data:` URL cost the server
its size several times over (bytes, text, parsed object) even though
demo/inputs.py then refused it, and the process kept the memory. This
middleware sits in front of every route: a body whose Content-Length is over
the bound is answered 413 without reading a byte of it, and a body without
one (chunked) is counted chunk by chunk as the app reads it and refused as
soon as the count passes the bound, so no more than the bound is ever taken in.

The bound comes from the upload cap (`body_bound`): an image sent inline is
base64, 4 characters per 3 bytes, inside a small JSON document; an upload is
the file inside a small multipart envelope. Gradio's /upload route enforces
max_file_size per file while it streams the file to disk, but not on its form
fields (held in memory) nor on the file count, so it is held to the same bound
rather than exempted: one file at the cap fits under it.

Standard library only, but for `middleware`, which builds Starlette's entry (Starlette comes with Gradio).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What a request carries besides the image: the JSON keys, file name, session hash and
# event data of a Gradio call, or a multipart envelope's boundaries and part headers.
# Those are a few hundred bytes; 64 KiB leaves room for a long file name and
# Gradio adding fields, and is nothing next to the 10 MB cap it is added to.
BODY_OVERHEAD_BYTES = 64 * 1024

STATUS_TOO_LARGE = 413
# One fixed sentence: the refusal says what to do, and nothing of the server.
REFUSAL = b"Request body too large: images are limited to the upload size this demo accepts."


def body_bound(max_file_size: int) -> int:
    """The largest request body that can carry an image of `max_file_size` bytes: base64 of it plus the envelope."""
    base64_length = -(-max_file_size // 3) * 4  # 4 characters per started group of 3 bytes
    return base64_length + BODY_OVERHEAD_BYTES


class BodyTooLarge(Exception):
    """Raised into the app when the body it is reading passes the bound; the middleware answers 413."""


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, or None when it has none (chunked) or a malformed one."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def refuse(send: Send) -> None:
    """Answer 413 with REFUSAL and close the connection (the unread body is not worth reading)."""
    await send(
        {
            "type": "http.response.start",
            "status": STATUS_TOO_LARGE,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(REFUSAL)).encode("ascii")),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": REFUSAL})


class BodyLimit:
    """ASGI middleware: HTTP request bodies over `max_body_bytes` get 413 before the app holds them."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # websockets and lifespan carry no request body
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await refuse(send)
            return
        await self._counted(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, counting the body it reads; past the bound, its own answer is replaced by 413."""
        received = 0
        over = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            if over:
                raise BodyTooLarge()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    over = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if over:  # the app's answer to the exception (FastAPI makes it a 400) is replaced by ours
                return
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not over:
                raise
        if over and not response_started:
            await refuse(send)


def middleware(max_file_size: int) -> Any:
    """A Starlette `Middleware` entry for FastAPI(middleware=[...]) (Gradio's `launch(app_kwargs=...)`)."""
    from starlette.middleware import Middleware  # Gradio's dependency; imported only by a server

    return Middleware(BodyLimit, max_body_bytes=body_bound(max_file_size))
