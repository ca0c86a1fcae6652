"""``/v1/studies``: submit, status, trials, model, splits, report, cancel, delete (the logic:
``store.lifecycle``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ValidationError

from service.http.api.deps import DB, AppSettings, StatusCache, Storage, Tenant
from service.http.api.responses import documented, too_many, unprocessable
from service.http.report import render as render_report
from service.http.schemas import (
    BestTrial,
    Page,
    StudyCreated,
    StudyItem,
    StudyOut,
    TrialDetail,
    TrialOut,
)
from service.store import lifecycle, stored_models, uploads
from service.store.tables import StudyRecord
from trainer import (
    CVProtocol,
    DatasetError,
    ParetoTrial,
    SpecError,
    SplitRows,
    StudySpec,
    networks,
    stored_model,
    stored_spec,
    stored_trade_off,
)

router = APIRouter(prefix="/v1/studies", tags=["studies"])
# Bounded so that the database can take them (SQLite and PostgreSQL integers overflow).
MAX_INT = 2**31 - 1
Offset = Annotated[int, Query(ge=0, le=MAX_INT)]
Limit = Annotated[int, Query(ge=1, le=100)]
TrialNumber = Annotated[int, Path(ge=0, le=MAX_INT)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyCreated,
    responses=documented(400, 401, 413, 429),
)
def submit_study(
    spec: StudySpec, db: DB, storage: Storage, settings: AppSettings, tenant: Tenant
) -> StudyRecord:
    try:  # again, now under the operator's limits
        spec = StudySpec.model_validate(spec.model_dump(), context={"limits": settings.limits})
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None
    try:
        return lifecycle.submit(
            db,
            storage,
            tenant,
            spec,
            limits=settings.limits,
            max_active=settings.max_active_studies,
        )
    except lifecycle.TooManyActiveStudies as exc:
        raise too_many(str(exc)) from None
    except DatasetError as exc:
        raise unprocessable("dataset", str(exc)) from None
    except SpecError as exc:  # its field names the part at fault (the network's layer, …)
        raise unprocessable(exc.field, str(exc)) from None


@router.get("", response_model=list[StudyItem], responses=documented(401))
def list_studies(db: DB, tenant: Tenant, offset: Offset = 0, limit: Limit = 50) -> list[StudyItem]:
    with db.read() as session:
        return [
            StudyItem(
                id=r.id,
                name=r.name,
                status=r.status,
                created_at=r.created_at,
                dataset=r.spec["dataset"],
                n_trials=r.n_trials,
                finished_at=r.finished_at,
            )
            for r in lifecycle.list_for(session, tenant, offset, limit)
        ]


def lookup(db: DB, tenant: str, study_id: str) -> StudyRecord:
    with db.read() as session:
        return lifecycle.get(session, tenant, study_id)


def json_body(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def cached_json(body: bytes) -> Response:
    """A cached answer as it was serialized: pollers' repeats skip validation and encoding."""
    return Response(body, media_type="application/json")


@router.get("/{study_id}", response_model=StudyOut, responses=documented(401, 404))
async def get_study(
    study_id: str,
    db: DB,
    storage: Storage,
    tenant: Tenant,
    cache: StatusCache,
    settings: AppSettings,
) -> Response:
    # Keyed by tenant: another tenant's request computes (and 404s) for itself.
    body = await cache.aget(
        (tenant, study_id),
        lambda: json_body(study_status(db, storage, tenant, study_id, settings.grace_s)),
    )
    return cached_json(body)


def study_status(db: DB, storage: Storage, tenant: str, study_id: str, alive_s: float) -> StudyOut:
    record = lookup(db, tenant, study_id)
    with db.read() as session:
        state = lifecycle.status(session, storage, record, alive_s)
    best = None
    if state.best is not None and state.best.values:
        best = BestTrial.of(state.best)
    return StudyOut(
        id=record.id,
        name=record.name,
        dataset=record.spec["dataset"],
        network=networks.describe(stored_model(record.spec)),
        status=record.status,
        metric=record.metric,
        direction=record.direction,
        n_trials=record.n_trials,
        trials=state.counts.as_dict(),
        progress=state.progress,
        eta_s=state.eta_s,
        queue_position=state.queue_position,
        workers=state.workers,
        priority=record.priority,
        best=best,
        trade_off=stored_trade_off(record.spec),
        pareto=None if state.pareto is None else [ParetoTrial.of(t) for t in state.pareto],
        chosen=None if state.chosen is None else state.chosen.number,
        test_score=record.test_score,
        error=record.error,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )


@router.get("/{study_id}/trials", response_model=Page[TrialOut], responses=documented(401, 404))
async def list_trials(
    study_id: str,
    db: DB,
    storage: Storage,
    tenant: Tenant,
    cache: StatusCache,
    offset: Offset = 0,
    limit: Limit = 50,
) -> Response:
    body = await cache.aget(
        (tenant, study_id, "trials", offset, limit),
        lambda: json_body(trial_page(db, tenant, study_id, offset, limit)),
    )
    return cached_json(body)


def trial_page(db: DB, tenant: str, study_id: str, offset: int, limit: int) -> Page[TrialOut]:
    record = lookup(db, tenant, study_id)
    with db.read() as session:
        total, page = lifecycle.trial_page(session, record, offset, limit)
    return Page[TrialOut](
        items=[TrialOut.of(t, state) for t, state in page], total=total, offset=offset, limit=limit
    )


@router.get(
    "/{study_id}/trials/{number}", response_model=TrialDetail, responses=documented(401, 404)
)
def get_trial(
    study_id: str, number: TrialNumber, db: DB, storage: Storage, tenant: Tenant
) -> TrialDetail:
    record = lookup(db, tenant, study_id)
    with db.read() as session:
        return TrialDetail.of(*lifecycle.trial(session, storage, record, number))


MODEL_FILE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The best configuration retrained on all non-test rows: a torch.save "
        "file that torch.load(..., weights_only=True) reads (trainer.load_model "
        "rebuilds it for prediction)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get(
    "/{study_id}/model",
    response_class=Response,
    responses={**MODEL_FILE, **documented(401, 404, 409)},
)
def get_model(study_id: str, db: DB, tenant: Tenant) -> Response:
    """The study's final model; 409 until the study has completed (and has one)."""
    return Response(
        stored_models.model_file(db, tenant, study_id),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="regtune-{study_id}.pt"'},
    )


@router.get("/{study_id}/splits", response_model=SplitRows, responses=documented(401, 404, 409))
def get_splits(study_id: str, db: DB, tenant: Tenant) -> SplitRows:
    """The rows of the study's protocol (0-based, into its dataset as stored): its test rows,
    each fold's scored rows and the inner-validation rows its early stopping watches, to
    score a baseline in the very same folds. 409 if its upload has been deleted since."""
    record = lookup(db, tenant, study_id)
    spec = stored_spec(record.spec)
    with db.read() as session:
        dataset = uploads.study_dataset(session, record)
    protocol = CVProtocol.of(spec, dataset, check_network=False)
    return SplitRows.of(protocol.test, protocol.splits)


REPORT_PAGE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A self-contained HTML page (no script, nothing fetched from elsewhere): "
        "best configuration, CV table (per fold, mean ± std), test score, learning curves of "
        "the best trial, diagnosis, parameter importance, score against each hyperparameter "
        "and the budget over time; it renders what exists while the study runs",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
}


# response_class=Response: the HTML is documented above, and errors stay application/json
# (an HTMLResponse class would document them as text/html).
@router.get(
    "/{study_id}/report",
    response_class=Response,
    responses={**REPORT_PAGE, **documented(401, 404)},
)
def get_report(study_id: str, db: DB, storage: Storage, tenant: Tenant) -> HTMLResponse:
    """The study's report as one HTML page (a plain def: rendering runs off the event loop)."""
    record = lookup(db, tenant, study_id)
    return HTMLResponse(render_report(record, lifecycle.all_trials(storage, record)))


@router.post("/{study_id}/cancel", response_model=StudyCreated, responses=documented(401, 404, 409))
def cancel_study(study_id: str, db: DB, tenant: Tenant, cache: StatusCache) -> StudyRecord:
    cancelled = lifecycle.cancel(db, tenant, study_id)
    cache.invalidate(tenant, study_id)
    return cancelled


@router.delete(
    "/{study_id}", status_code=status.HTTP_204_NO_CONTENT, responses=documented(401, 404)
)
def delete_study(
    study_id: str, db: DB, storage: Storage, tenant: Tenant, cache: StatusCache
) -> Response:
    lifecycle.delete(db, storage, tenant, study_id)
    cache.invalidate(tenant, study_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
