"""A study's stored files: its final model, written in the transaction that completes it.

The model (``trainer.model_file``: a ``torch.save`` file that ``torch.load(weights_only=True)``
reads) lives in ``regtune_artifacts`` in the one database, so every worker and API process
reaches it without a shared filesystem; it is deleted with its study (``ON DELETE CASCADE``,
and explicitly by ``lifecycle.delete``). Routers call these functions; they hold no HTTP types.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import delete, select

from service.store import lifecycle
from service.store.db import Database
from service.store.tables import ACTIVE, ArtifactRecord

MODEL = "model"


def complete(
    db: Database,
    study_id: str,
    *,
    test_score: float | None,
    model: bytes | None,
    error: str | None = None,
) -> bool:
    """Mark the study completed and store its model, both or neither (one transaction).

    Only a study that is still queued or running moves (a study cancelled or deleted
    meanwhile keeps its state, and no file is stored for it). ``error`` notes why a completed
    study has no model. Returns whether the study moved.
    """
    with db.write() as session:
        if not lifecycle.move(session, study_id, "completed", test_score=test_score, error=error):
            return False
        if model is not None:
            session.execute(
                delete(ArtifactRecord).where(
                    ArtifactRecord.study_id == study_id, ArtifactRecord.kind == MODEL
                )
            )
            session.add(
                ArtifactRecord(
                    study_id=study_id,
                    kind=MODEL,
                    size_bytes=len(model),
                    sha256=hashlib.sha256(model).hexdigest(),
                    data=model,
                )
            )
    return True


def model_file(db: Database, tenant: str, study_id: str) -> bytes:
    """The study's model file; ``NotFound`` (unknown or another tenant's study) or
    ``Conflict`` (no model: not completed yet, failed or cancelled, or built without one)."""
    with db.read() as session:
        record = lifecycle.get(session, tenant, study_id)
        data = session.scalar(
            select(ArtifactRecord.data).where(
                ArtifactRecord.study_id == study_id, ArtifactRecord.kind == MODEL
            )
        )
    if data is not None:
        return data
    if record.status in ACTIVE:
        raise lifecycle.Conflict(
            f"study {study_id!r} is {record.status}: its model is retrained on all non-test "
            "rows once the study completes; try again then"
        )
    if record.status != "completed":
        raise lifecycle.Conflict(
            f"study {study_id!r} is {record.status}; only a completed study has a model"
        )
    reason = record.error or "it completed before regtune stored final models"
    raise lifecycle.Conflict(f"study {study_id!r} completed without a model: {reason}")
