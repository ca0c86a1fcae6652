"""The HTTP client behind ``regtune submit/status/trials/cancel/datasets``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(RuntimeError):
    """The server answered with an error; the message carries its ``detail``."""


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

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach {self.http.base_url}: {exc}") from None
        if response.is_error:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise ApiError(f"{response.status_code}: {format_detail(detail)}")
        return response.json() if response.content else None

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/v1/studies", json=spec)

    def study(self, study_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/studies/{study_id}")

    def trials(self, study_id: str, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        return self.request(
            "GET", f"/v1/studies/{study_id}/trials", params={"offset": offset, "limit": limit}
        )

    def cancel(self, study_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/studies/{study_id}/cancel")

    def upload(self, path: Path, target: str | None, name: str | None = None) -> dict[str, Any]:
        data = {k: v for k, v in {"target": target, "name": name}.items() if v}
        with path.open("rb") as handle:
            return self.request(
                "POST", "/v1/datasets", files={"file": (path.name, handle)}, data=data
            )


def format_detail(detail: Any) -> str:
    """FastAPI's validation list as 'field: problem' lines; anything else as is."""
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []) if p != 'body')}: {d.get('msg')}"
            for d in detail
        )
    return str(detail)
