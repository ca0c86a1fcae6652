"""Uploaded datasets: validate completely, then store once; load them back for workers."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.settings import Settings
from service.store.errors import Conflict, NotFound
from service.store.tables import ACTIVE, DatasetRecord, StudyRecord
from trainer import (
    ArrayLimits,
    Dataset,
    DatasetError,
    DatasetTooLarge,
    MissingTarget,
    Table,
    TableLayout,
    Task,
    load_builtin,
    load_csv,
    load_npz,
)


class UploadTooLarge(DatasetTooLarge):
    """The upload exceeds a configured size, row or column limit (HTTP 413)."""


def parse_upload(
    content: bytes,
    filename: str,
    *,
    target: str | None,
    task: Task | None,
    settings: Settings,
    missing_target: MissingTarget = "refuse",
) -> Dataset:
    """Parse and validate an upload; raise :class:`DatasetError` naming what is wrong."""
    if len(content) > settings.max_upload_bytes:
        raise UploadTooLarge(
            f"upload is {len(content)} bytes; the limit is {settings.max_upload_bytes}"
        )
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    limits = ArrayLimits(
        rows=settings.max_upload_rows,
        columns=settings.max_upload_columns,
        bytes=settings.max_upload_memory_bytes,
    )
    if suffix == "csv":
        if not target:
            raise DatasetError("a CSV upload needs the form field 'target' naming its label column")
        dataset = load_csv(
            content,
            target,
            name=filename,
            task=task,
            limits=limits,
            missing_target=missing_target,
        )
    elif suffix == "npz":
        dataset = load_npz(content, name=filename, task=task, limits=limits)
    else:
        raise DatasetError(f"file {filename[:200]!r}: upload a .csv or an .npz file")
    if dataset.task == "classification":
        for label, count in dataset.class_counts().items():
            if count < 2:
                raise DatasetError(
                    f"class {str(label)[:100]!r} has only {count} sample; cross-validation needs "
                    "at least 2 samples of every class"
                )
    if dataset.n_samples > settings.max_upload_rows:
        raise UploadTooLarge(f"{dataset.n_samples} rows; the limit is {settings.max_upload_rows}")
    if dataset.n_features > settings.max_upload_columns:
        raise UploadTooLarge(
            f"{dataset.n_features} feature columns; the limit is {settings.max_upload_columns}"
        )
    return dataset


def to_npz(dataset: Dataset) -> bytes:
    """The validated arrays in the one format workers read back (no pickles): ``X``, ``y``,
    ``input_shape``, ``feature_names``; for a table also its raw cells and its layout (JSON)."""
    arrays: dict[str, Any] = {
        "X": dataset.X,
        "y": dataset.y,
        "input_shape": np.array(dataset.input_shape, dtype=np.int64),
        "feature_names": np.array(dataset.feature_names, dtype=np.str_),
    }
    if dataset.table is not None:
        arrays["raw"] = dataset.table.raw
        arrays["layout"] = np.array(json.dumps(dataset.table.layout.as_plain()))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def summary(dataset: Dataset) -> dict[str, Any]:
    """How each column is treated (an upload's ``columns``), and the rows dropped."""
    columns = [] if dataset.table is None else dataset.table.layout.columns
    return {"columns": [c.summary() for c in columns], "dropped_rows": dataset.dropped_rows}


def store(
    session: Session, tenant: str, dataset: Dataset, *, name: str, format: str, target: str | None
) -> DatasetRecord:
    data = to_npz(dataset)
    record = DatasetRecord(
        id=uuid.uuid4().hex,
        tenant=tenant,
        name=name,
        format=format,
        target=target,
        task=dataset.task,
        n_samples=dataset.n_samples,
        n_features=dataset.n_features,
        classes=list(dataset.classes),
        input_shape=list(dataset.input_shape),
        **summary(dataset),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        data=data,
    )
    session.add(record)
    return record


def get_record(session: Session, tenant: str, dataset_id: str) -> DatasetRecord | None:
    return session.scalar(
        select(DatasetRecord).where(DatasetRecord.id == dataset_id, DatasetRecord.tenant == tenant)
    )


def delete(session: Session, tenant: str, dataset_id: str) -> None:
    """Delete an upload, unless a queued or running study of the tenant trains on it."""
    record = get_record(session, tenant, dataset_id)
    if record is None:
        raise NotFound(f"dataset {dataset_id!r} not found")
    active = session.scalars(
        select(StudyRecord).where(StudyRecord.tenant == tenant, StudyRecord.status.in_(ACTIVE))
    )
    users = [study.id for study in active if study.spec.get("dataset") == dataset_id]
    if users:
        raise Conflict(
            f"dataset {dataset_id!r} is used by {len(users)} queued or running "
            f"stud{'y' if len(users) == 1 else 'ies'} ({', '.join(users[:5])}): cancel "
            f"{'it' if len(users) == 1 else 'them'} or wait until "
            f"{'it ends' if len(users) == 1 else 'they end'}"
        )
    session.delete(record)


def study_dataset(session: Session, record: StudyRecord) -> Dataset:
    """The dataset a study of ``record`` trains on, as stored; an upload deleted since (a
    study that ended no longer holds it) is a :class:`Conflict` that says so."""
    ref = record.spec["dataset"]
    try:
        return resolve(session, record.tenant, ref)
    except DatasetError:
        raise Conflict(
            f"study {record.id!r} trained on dataset {ref!r}, which has been deleted since"
        ) from None


@lru_cache(maxsize=16)
def cached_builtin(ref: str) -> Dataset:
    return load_builtin(ref)


def resolve(session: Session, tenant: str, ref: str) -> Dataset:
    """The dataset a spec names: ``builtin:NAME`` or one of the tenant's uploads by id."""
    if ref.startswith("builtin:"):
        return cached_builtin(ref)
    record = get_record(session, tenant, ref)
    if record is None:
        raise DatasetError(f"unknown dataset {ref!r}: use 'builtin:NAME' or an uploaded dataset id")
    with np.load(io.BytesIO(record.data), allow_pickle=False) as arrays:
        table = None
        if "layout" in arrays:
            layout = TableLayout.from_plain(json.loads(str(arrays["layout"])))
            table = Table(layout, arrays["raw"])
        names = arrays.get("feature_names", ())
        return Dataset(
            name=record.name,
            X=arrays["X"],
            y=arrays["y"],
            task=record.task,  # type: ignore[arg-type]
            input_shape=tuple(int(s) for s in arrays["input_shape"]),
            classes=tuple(record.classes),
            feature_names=tuple(str(n) for n in names),
            table=table,
            dropped_rows=record.dropped_rows,
        )
