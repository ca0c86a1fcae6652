"""Every method the API document does not list for one of its paths answers JSON 405 with
``Allow``, never the dashboard (which owns the rest of the root and answers 403 to writes).

The paths and their methods are read from the served ``/openapi.json``, so a new route is
covered without touching this file.
"""

from __future__ import annotations

import re

import pytest
from servers import Server, workerless_server

# TRACE too: the dashboard must not be the one to answer it. (A made-up method never gets
# past uvicorn's parser: 400 "Invalid HTTP request received.")
METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")

server = workerless_server("http-methods")


def test_every_undocumented_method_of_a_documented_path_answers_json_405(
    server: Server,
) -> None:
    with server.client() as http:
        document = http.get("/openapi.json").json()
        checked = []
        for template, operations in document["paths"].items():
            path = re.sub(r"\{[^}]+\}", "0", template)
            allowed = ", ".join(sorted(m.upper() for m in operations))
            for method in METHODS:
                if method.lower() in operations:
                    continue
                response = http.request(method, path)
                checked.append(f"{method} {template}")
                assert response.status_code == 405, (method, path, response.text)
                assert response.headers["content-type"] == "application/json", (method, path)
                assert response.headers["allow"] == allowed, (method, path)
                if method != "HEAD":  # an answer to HEAD has no body
                    assert response.json() == {
                        "detail": f"{method} is not allowed on {path}; use {allowed}"
                    }, (method, path)
    assert "POST /healthz" in checked and "PUT /v1/studies" in checked, checked


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_write_to_healthz_is_a_405_not_the_dashboards_403(server: Server, method: str) -> None:
    with server.client() as http:
        response = http.request(method, "/healthz", json={})
        assert http.get("/healthz").json() == {"status": "ok"}
    assert response.status_code == 405, response.text
    assert response.json() == {"detail": f"{method} is not allowed on /healthz; use GET"}
    assert "read-only" not in response.text
