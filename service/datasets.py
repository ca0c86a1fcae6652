"""Uploaded datasets: validate completely, then store once; load them back for workers."""

from __future__ import annotations

import hashlib
import io
import uuid
from functools import lru_cache

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import DatasetRecord
from service.settings import Settings
from trainer.datasets import (
    ArrayLimits,
    Dataset,
    DatasetError,
    DatasetTooLarge,
    load_builtin,
    load_csv,
    load_npz,
)
from trainer.spec import Task


class UploadTooLarge(DatasetTooLarge):
    """The upload exceeds a configured size, row or column limit (HTTP 413)."""


def parse_upload(
    content: bytes, filename: str, *, target: str | None, task: Task | None, settings: Settings
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
        dataset = load_csv(content, target, name=filename, task=task, limits=limits)
    elif suffix == "npz":
        dataset = load_npz(content, name=filename, task=task, limits=limits)
    else:
        raise DatasetError(f"file {filename[:200]!r}: upload a .csv or an .npz file")
    if dataset.task == "classification":
        for label, count in dataset.class_counts().items():
            if count < 2:
                raise DatasetError(
                    f"class {label[:100]!r} has only {count} sample; cross-validation needs "
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
    """The validated arrays in the one format workers read back (no pickles)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, X=dataset.X, y=dataset.y, input_shape=np.array(dataset.input_shape, dtype=np.int64)
    )
    return buffer.getvalue()


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
        return Dataset(
            name=record.name,
            X=arrays["X"],
            y=arrays["y"],
            task=record.task,  # type: ignore[arg-type]
            input_shape=tuple(int(s) for s in arrays["input_shape"]),
            classes=tuple(record.classes),
        )
