"""The Python client of the HTTP API; every ``regtune`` command that talks to a server uses it.

Methods return the API's own response models (``service.http.schemas``), parsed from its JSON::

    from service.cli.client import Client

    with Client("http://127.0.0.1:8000", token="rt_...") as client:  # or REGTUNE_URL/_TOKEN
        created = client.submit({"dataset": "builtin:wine", "n_trials": 10})
        study = client.wait(created.id)  # a StudyOut once it is no longer queued or running
        if study.best is not None:
            print(study.best.value, study.best.params)
        if study.status == "completed":  # the final model, for trainer's load_model
            Path("model.pt").write_bytes(client.model(created.id))

An error answer raises :class:`ApiError` with the server's ``detail``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from service.http import schemas
from trainer import StudySpec, field_problem

DEFAULT_URL = "http://127.0.0.1:8000"
ACTIVE = ("queued", "running")
M = TypeVar("M", bound=BaseModel)


class ApiError(RuntimeError):
    """The server answered with an error; the message carries its ``detail``.

    ``status_code`` is the HTTP status (None when the server could not be reached) and
    ``detail`` the body's ``detail`` as sent (a string, or FastAPI's list of field errors).
    """

    def __init__(self, message: str, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


class Client:
    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        token = token or os.environ.get("REGTUNE_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=url or os.environ.get("REGTUNE_URL", DEFAULT_URL),
            headers=headers,
            timeout=timeout,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The raw answer; an error status raises ``ApiError`` with the server's detail."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach {self.http.base_url}: {exc}") from None
        if response.is_error:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise ApiError(
                f"{response.status_code}: {format_detail(detail)}", response.status_code, detail
            )
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON (None for an empty body)."""
        response = self.send(method, path, **kwargs)
        return response.json() if response.content else None

    def typed(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        """``request``'s answer parsed as the response model ``model``."""
        return self._parse(model.model_validate, method, path, **kwargs)

    def typed_list(self, model: type[M], method: str, path: str, **kwargs: Any) -> list[M]:
        """``request``'s answer parsed as a list of ``model``."""
        adapter: TypeAdapter[list[M]] = TypeAdapter(list[model])  # type: ignore[valid-type]
        return self._parse(adapter.validate_python, method, path, **kwargs)

    def _parse(self, parse: Callable[[Any], Any], method: str, path: str, **kwargs: Any) -> Any:
        body = self.request(method, path, **kwargs)
        try:
            return parse(body)
        except ValidationError as exc:
            raise ApiError(f"unexpected answer to {method} {path}: {exc}") from None

    # --- studies ------------------------------------------------------------------------------

    def submit(self, spec: dict[str, Any] | StudySpec) -> schemas.StudyCreated:
        """Submit a study spec (a dict as in a spec file, or a ``StudySpec``)."""
        if isinstance(spec, StudySpec):
            spec = spec.model_dump(mode="json", exclude_unset=True)
        return self.typed(schemas.StudyCreated, "POST", "/v1/studies", json=spec)

    def studies(self, offset: int = 0, limit: int = 50) -> list[schemas.StudyItem]:
        """This tenant's studies, newest first."""
        return self.typed_list(
            schemas.StudyItem, "GET", "/v1/studies", params={"offset": offset, "limit": limit}
        )

    def study(self, study_id: str) -> schemas.StudyOut:
        """Status, trial counts by state, progress, ETA, best trial and test score."""
        return self.typed(schemas.StudyOut, "GET", f"/v1/studies/{study_id}")

    def wait(
        self,
        study_id: str,
        *,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        on_update: Callable[[schemas.StudyOut], None] | None = None,
    ) -> schemas.StudyOut:
        """Poll until the study is no longer queued or running; ``on_update`` sees each poll."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            study = self.study(study_id)
            if on_update is not None:
                on_update(study)
            if study.status not in ACTIVE:
                return study
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"study {study_id} still {study.status} after {timeout_s}s")
            time.sleep(poll_s)

    def trials(
        self, study_id: str, offset: int = 0, limit: int = 50
    ) -> schemas.Page[schemas.TrialOut]:
        """A page of trials in number order."""
        return self.typed(
            schemas.Page[schemas.TrialOut],
            "GET",
            f"/v1/studies/{study_id}/trials",
            params={"offset": offset, "limit": limit},
        )

    def trial(self, study_id: str, number: int) -> schemas.TrialDetail:
        """One trial with per-fold scores, learning curves and diagnosis."""
        return self.typed(schemas.TrialDetail, "GET", f"/v1/studies/{study_id}/trials/{number}")

    def model(self, study_id: str) -> bytes:
        """The study's final model file (load it with ``trainer.load_model``).

        Raises ``ApiError`` 409 while the study has not completed, 404 for an unknown id.
        """
        return self.send("GET", f"/v1/studies/{study_id}/model").content

    def cancel(self, study_id: str) -> schemas.StudyCreated:
        return self.typed(schemas.StudyCreated, "POST", f"/v1/studies/{study_id}/cancel")

    def delete(self, study_id: str) -> None:
        self.request("DELETE", f"/v1/studies/{study_id}")

    # --- datasets -----------------------------------------------------------------------------

    def upload(
        self,
        path: Path,
        target: str | None,
        name: str | None = None,
        missing_target: str | None = None,
    ) -> schemas.DatasetOut:
        fields = {"target": target, "name": name, "missing_target": missing_target}
        data = {k: v for k, v in fields.items() if v}
        with path.open("rb") as handle:
            return self.typed(
                schemas.DatasetOut,
                "POST",
                "/v1/datasets",
                files={"file": (path.name, handle)},
                data=data,
            )

    def datasets(self) -> list[schemas.DatasetOut]:
        return self.typed_list(schemas.DatasetOut, "GET", "/v1/datasets")

    def dataset(self, dataset_id: str) -> schemas.DatasetOut:
        return self.typed(schemas.DatasetOut, "GET", f"/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        self.request("DELETE", f"/v1/datasets/{dataset_id}")


def format_detail(detail: Any) -> str:
    """FastAPI's validation list as 'field: problem' (``field_problem``, the body's own fields
    named without "body."); anything else as is."""
    if isinstance(detail, list):
        return "; ".join(
            field_problem(
                {"loc": [p for p in d.get("loc", []) if p != "body"], "msg": d.get("msg")}
            )
            for d in detail
        )
    return str(detail)
