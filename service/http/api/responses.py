"""HTTP error responses in FastAPI's own shape: ``{"detail": [{"loc", "msg", "type"}]}``."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status

from service.http.schemas import ErrorOut

DESCRIPTIONS = {
    400: "The body could not be parsed",
    401: "Missing or invalid token",
    404: "No such study, trial or dataset (for this tenant)",
    409: "The study or dataset is not in a state that allows this",
    413: "The body or the dataset is over a size limit",
    429: "The tenant has as many queued or running studies as max_active_studies allows",
}


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can answer with (422 is FastAPI's)."""
    return {code: {"model": ErrorOut, "description": DESCRIPTIONS[code]} for code in codes}


def unprocessable(field: str, message: str) -> HTTPException:
    """422 naming the request field at fault (dotted if nested), like FastAPI's errors do."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["body", *field.split(".")], "msg": message, "type": "value_error"}],
    )


def too_large(message: str) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, message)


def not_found(message: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, message)


def too_many(message: str) -> HTTPException:
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, message)
