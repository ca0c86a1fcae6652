"""HTTP errors in FastAPI's own shape: ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``."""

from __future__ import annotations

from fastapi import HTTPException, status


def unprocessable(field: str, message: str) -> HTTPException:
    """422 naming the request field at fault, like FastAPI's validation errors do."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )


def too_large(message: str) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, message)


def not_found(message: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, message)
