"""``/v1/datasets``: upload (validated completely before it is stored), list, read, delete."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile, status
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service.http.api.deps import DB, AppSettings, Tenant
from service.http.api.responses import documented, not_found, too_large, unprocessable
from service.http.schemas import DatasetOut
from service.store import uploads
from service.store.tables import DatasetRecord
from trainer import DatasetError, DatasetTooLarge

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
MAX_NAME = 200  # the length of the name and target columns


def check_text(field: str, what: str, value: str | None) -> None:
    """Refuse names that cannot be stored as text everywhere (PostgreSQL refuses NUL)."""
    if value is None:
        return
    if len(value) > MAX_NAME:
        raise unprocessable(field, f"{what} has {len(value)} characters; the limit is {MAX_NAME}")
    for i, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise unprocessable(
                field, f"{what} must not contain control characters, got {char!r} at position {i}"
            )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    responses=documented(400, 401, 413),
)
async def upload_dataset(
    db: DB,
    settings: AppSettings,
    tenant: Tenant,
    file: Annotated[UploadFile, File(description="a .csv (with a header row) or an .npz (X, y)")],
    target: Annotated[
        str | None, Form(max_length=MAX_NAME, description="the CSV's label column")
    ] = None,
    task: Annotated[Literal["classification", "regression"] | None, Form()] = None,
    name: Annotated[str | None, Form(max_length=MAX_NAME)] = None,
    missing_target: Annotated[
        Literal["refuse", "drop"],
        Form(description="a CSV's rows with a blank target: refused (422), or dropped"),
    ] = "refuse",
) -> DatasetRecord:
    content = await file.read(settings.max_upload_bytes + 1)
    filename = file.filename or "upload"
    check_text("file", "the file name", filename)
    check_text("target", "target", target)
    check_text("name", "name", name)
    try:
        # Parsing takes seconds for a large file: off the event loop, so other requests go on.
        dataset = await run_in_threadpool(
            uploads.parse_upload,
            content,
            filename,
            target=target,
            task=task,
            settings=settings,
            missing_target=missing_target,
        )
    except DatasetTooLarge as exc:
        raise too_large(str(exc)) from None
    except DatasetError as exc:
        raise unprocessable("file", str(exc)) from None
    with db.write() as session:
        return uploads.store(
            session,
            tenant,
            dataset,
            name=name or filename,
            format=filename.rsplit(".", 1)[-1].lower(),
            target=target,
        )


@router.get("", response_model=list[DatasetOut], responses=documented(401))
def list_datasets(db: DB, tenant: Tenant) -> list[DatasetRecord]:
    with db.read() as session:
        return list(
            session.scalars(
                select(DatasetRecord)
                .where(DatasetRecord.tenant == tenant)
                .order_by(DatasetRecord.created_at.desc())
            )
        )


@router.get("/{dataset_id}", response_model=DatasetOut, responses=documented(401, 404))
def get_dataset(dataset_id: str, db: DB, tenant: Tenant) -> DatasetRecord:
    with db.read() as session:
        record = uploads.get_record(session, tenant, dataset_id)
    if record is None:
        raise not_found(f"dataset {dataset_id!r} not found")
    return record


@router.delete(
    "/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, responses=documented(401, 404, 409)
)
def delete_dataset(dataset_id: str, db: DB, tenant: Tenant) -> Response:
    with db.write() as session:
        uploads.delete(session, tenant, dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
