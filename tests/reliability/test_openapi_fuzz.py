"""Schemathesis against the live server's ``/openapi.json``: no 5xx, every response as
documented (status code, content type, body schema), and invalid requests refused with a 4xx.

The operations are read from the served document, so a new endpoint is fuzzed without
touching this file. optuna-dashboard's routes (``/dashboard``, ``/api``, ``/static``) are a
mount that the document does not describe.

(Schemathesis' pytest integration, ``schema.parametrize()`` with ``from_fixture``, fails on
pytest 9, which dropped ``Node._nodeid``; each operation's Hypothesis strategy is driven
directly instead.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from servers import Server, tiny_study, workerless_server

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,  # invalid requests get a 4xx
]
EXAMPLES = 60  # per operation and mode
# What the document must at least describe (a renamed or lost route is a failure here).
EXPECTED = {
    "GET /healthz",
    "GET /v1/datasets",
    "POST /v1/datasets",
    "GET /v1/datasets/{dataset_id}",
    "GET /v1/studies",
    "POST /v1/studies",
    "GET /v1/studies/{study_id}",
    "DELETE /v1/studies/{study_id}",
    "GET /v1/studies/{study_id}/trials",
    "GET /v1/studies/{study_id}/trials/{number}",
    "GET /v1/studies/{study_id}/model",
    "GET /v1/studies/{study_id}/splits",
    "GET /v1/studies/{study_id}/report",
    "POST /v1/studies/{study_id}/cancel",
}


bare_server = workerless_server(
    "openapi-fuzz", REGTUNE_MAX_UPLOAD_BYTES="200000", REGTUNE_LIMITS__MAX_TRIALS="100"
)


@pytest.fixture(scope="module")
def server(bare_server: Server) -> Server:
    with bare_server.client() as http:  # something to list and page through
        assert http.post("/v1/studies", json=tiny_study()).status_code == 201
    return bare_server


@pytest.fixture(scope="module")
def api_schema(server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def operations(schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


def test_the_document_describes_the_api(api_schema: schemathesis.BaseSchema) -> None:
    labels = {operation.label for operation in operations(api_schema)}
    assert labels >= EXPECTED, EXPECTED - labels


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_operation_answers_as_documented(
    api_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    for operation in operations(api_schema):
        inputs = (operation.path_parameters, operation.query, operation.headers, operation.body)
        if mode == GenerationMode.NEGATIVE and not any(len(p) for p in inputs):
            continue  # nothing to make invalid (GET /healthz)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def answers_as_documented(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            answers_as_documented()
        except Unsatisfiable:
            # Only where every value is valid (a free-form string path parameter).
            assert mode == GenerationMode.NEGATIVE, operation.label
        except BaseException as exc:
            exc.add_note(f"operation: {operation.label} ({mode} data)")
            raise


def test_the_fuzzing_left_the_server_healthy(server: Server) -> None:
    assert server.proc.poll() is None
    log = Path(server.log).read_text()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]
