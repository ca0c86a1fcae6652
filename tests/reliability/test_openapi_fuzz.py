"""Schemathesis against the live server's ``/openapi.json``: no 5xx, every response as
documented (status code, content type, headers, body schema), invalid requests refused with
a 4xx, undocumented methods answered 405, in all of its phases: the schema's boundaries and
wrong types (coverage), random data (fuzzing), and chains of calls that reuse what earlier
calls returned (stateful).

The operations are read from the served document, so a new endpoint is fuzzed without
touching this file. optuna-dashboard's routes (``/dashboard``, ``/api``, ``/static``) are a
mount that the document does not describe.

Schemathesis runs as its command line, a real process like the server: its pytest
integration (``schema.parametrize()``) fails on pytest 9, which dropped ``Node._nodeid``, and
driving each operation's strategy by hand leaves out the coverage and stateful phases.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import schemathesis
from servers import Server, tiny_study, workerless_server

pytestmark = pytest.mark.slow

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Cases per operation in the fuzzing phase, and scenarios in the stateful one (the coverage
# phase makes every case the schema's boundaries and types call for, whatever this says).
EXAMPLES = 100
STUDIES = 3  # existing studies whose ids the path parameters draw from (so not only 404s)
# Every check but positive_data_acceptance: the document cannot say that a dataset must
# exist or that a range's low must be below its high, so some schema-valid specs get a 422.
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]
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
    "GET /v1/studies/{study_id}/report",
    "POST /v1/studies/{study_id}/cancel",
}


bare_server = workerless_server(
    "openapi-fuzz", REGTUNE_MAX_UPLOAD_BYTES="200000", REGTUNE_LIMITS__MAX_TRIALS="100"
)


@pytest.fixture(scope="module")
def server(bare_server: Server) -> Server:
    return bare_server


@pytest.fixture(scope="module")
def config(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Schemathesis' configuration: half of the ids and datasets it sends are real ones, so
    that the calls get past the 404 to what the API does with a real study or dataset."""
    with server.client() as http:
        studies = [http.post("/v1/studies", json=tiny_study()) for _ in range(STUDIES)]
        upload = http.post(
            "/v1/datasets",
            files={"file": ("xor.csv", b"a,b,y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n" * 10)},
            data={"target": "y"},
        )
    assert all(s.status_code == 201 for s in studies) and upload.status_code == 201
    study_ids = [s.json()["id"] for s in studies]
    dataset_id = upload.json()["id"]
    path = tmp_path_factory.mktemp("schemathesis") / "schemathesis.toml"
    path.write_text(
        f"""
[cache]  # no state kept between runs (nor a .schemathesis folder left in the tree)
enabled = false

[dictionaries]
studies = {{ values = {study_ids} }}
uploads = {{ values = ["{dataset_id}"] }}
datasets = {{ values = ["builtin:wine", "{dataset_id}"] }}

[parameters]
"path.study_id" = {{ dictionary = "studies", probability = 0.5 }}
"path.dataset_id" = {{ dictionary = "uploads", probability = 0.5 }}
"body.dataset" = {{ dictionary = "datasets", probability = 0.5 }}
"""
    )
    return path


@pytest.fixture(scope="module")
def api_schema(server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def test_the_document_describes_the_api(api_schema: schemathesis.BaseSchema) -> None:
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert labels >= EXPECTED, EXPECTED - labels


def test_every_operation_answers_as_documented_in_every_phase(server: Server, config: Path) -> None:
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(config),
            "run",
            f"{server.url}/openapi.json",
            *CHECKS,
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            "1",
            "--workers",
            "1",  # the machine's cores are the server's
            "--generation-database",
            "none",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=config.parent,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-12_000:]
    # Every phase ran (none skipped for want of something to do), and the count of cases
    # shows in the test's output.
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}", output), output[-6_000:]
    cases = re.search(r"(\d+) generated, \1 passed", output)
    assert cases is not None, output[-6_000:]
    print(f"schemathesis: {cases.group(0)}")


def test_the_fuzzing_left_the_server_healthy(server: Server) -> None:
    assert server.proc.poll() is None
    log = Path(server.log).read_text()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]
