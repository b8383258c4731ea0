"""Errors a request can cause, answered as ``{"message": ..., "field": ...}`` JSON, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the server refuses, with the HTTP status, a message and the field at fault.

    Attributes:
        status: HTTP status code (4xx).
        message: what is wrong and what was expected.
        field: the request field at fault (``"image"``, ``"prompts[1].box"``), or None.
    """

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response (``message`` is what ``inference-sdk`` shows)."""
        return {"message": self.message, "field": self.field, "status": self.status}


def field_path(loc: tuple | list) -> str:
    """``("body", "prompts", 0, "box")`` -> ``"prompts[0].box"`` (the ``body`` prefix dropped)."""
    parts = [p for p in loc if p not in ("body", "query")]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def install_error_handlers(app: Any) -> None:
    """Answer validation errors, refused requests and unexpected failures with JSON.

    A schema error becomes 422 naming the first bad field; an :class:`ApiError` its own status;
    anything else 500 with a short message (the traceback goes to the server log only).
    """
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = field_path(first.get("loc", ("body",)))
        msg = str(first.get("msg", "invalid value"))
        if first.get("type") == "json_invalid":
            field, msg = "body", f"the body is not valid JSON ({msg})"
            errors = []
        details = [{"field": field_path(e.get("loc", ())), "message": e.get("msg")} for e in errors]
        return JSONResponse(
            {"message": f"{field}: {msg}", "field": field, "status": 422, "errors": details},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # what FastAPI and Starlette refuse themselves: a body that is not UTF-8 or nests past
        # the JSON parser's depth ("There was an error parsing the body"), an unknown route...
        field = "body" if exc.status_code == 400 else None
        message = str(exc.detail)
        if exc.status_code == 400:
            message = f"the body could not be parsed as JSON ({exc.detail})"
        return JSONResponse(
            {"message": message, "field": field, "status": exc.status_code},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(
            {"message": f"internal error: {type(exc).__name__}", "field": None, "status": 500},
            status_code=500,
        )
