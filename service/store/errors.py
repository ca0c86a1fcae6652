"""The service's domain errors, translated to HTTP in one place (``service.http.app``)."""

from __future__ import annotations


class NotFound(LookupError):
    """No such study or dataset for this tenant (another tenant's is not found either): 404."""


class Conflict(RuntimeError):
    """The record's state does not allow the request (cancelling a finished study, deleting a
    dataset an active study uses): 409."""
