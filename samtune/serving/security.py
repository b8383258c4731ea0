"""API keys and request limits."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from samtune.serving.errors import ApiError


@dataclass(frozen=True)
class Limits:
    """What one request may hold.

    Attributes:
        max_body_bytes: request body size.
        max_image_pixels: width x height of the decoded image.
        max_prompts: prompts per segment request.
        max_points_per_prompt: points in one prompt.
    """

    max_body_bytes: int = 64 * 2**20
    max_image_pixels: int = 50_000_000
    max_prompts: int = 64
    max_points_per_prompt: int = 64

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_image_pixels", "max_prompts", "max_points_per_prompt"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"limits.{name} must be >= 1, got {getattr(self, name)!r}")


class KeyCheck:
    """Accepts a request whose key is in ``keys``, or every request when ``keys`` is empty.

    The key may come as the ``api_key`` query parameter, the ``api_key`` field of the JSON
    body, or an ``Authorization: Bearer <key>`` header, as Roboflow's server takes it.
    """

    def __init__(self, keys: Iterable[str] | None) -> None:
        self.keys = [str(k) for k in (keys or []) if str(k)]

    @property
    def enabled(self) -> bool:
        """Whether requests need a key."""
        return bool(self.keys)

    def check(self, *, query_key: str | None, body_key: str | None, header: str | None) -> None:
        """Raise 401 (no key) or 403 (unknown key) naming ``api_key``; return when accepted."""
        if not self.keys:
            return
        given = [k for k in (query_key, body_key) if k]
        if header and header.lower().startswith("bearer "):
            given.append(header[7:].strip())
        if not given:
            raise ApiError(
                401,
                "api_key is required: pass ?api_key=..., an 'api_key' field or "
                "'Authorization: Bearer ...'",
                "api_key",
            )
        for key in given:
            if any(hmac.compare_digest(key.encode(), k.encode()) for k in self.keys):
                return
        raise ApiError(403, "api_key is not one of this server's keys", "api_key")


class BodyLimit:
    """ASGI middleware answering 413 JSON to a body larger than ``max_bytes`` before reading it all."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send, int(length))
            return
        chunks, seen = [], 0
        while True:  # read the whole body here (bounded), then hand it on in one piece
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                await self._refuse(send, seen)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        await self.app(scope, _replay([{"type": "http.request", "body": body}], receive), send)

    async def _refuse(self, send: Any, size: int) -> None:
        body = json.dumps(
            {
                "message": f"request body of {size} bytes is over the limit of {self.max_bytes}",
                "field": "body",
                "status": 413,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict], then: Any = None) -> Any:
    """A ``receive`` that gives ``messages`` first, then defers to ``then`` (disconnects)."""
    queue = list(messages)

    async def receive() -> dict:
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
