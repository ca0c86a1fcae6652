"""Security over real HTTP: tokens at rest, authentication on every route, tenant isolation,
the dashboard guard, configurable limits, and no user input reaching code or files.

One ``regtune serve`` (no workers, so nothing trains) with small limits serves the module;
the routes to check are read from the server's ``/openapi.json`` and from optuna-dashboard's
own route table, so that a route added later is checked without touching this file.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import optuna
import pytest
from networks_of import build_model, parameter_count
from optuna.storages import InMemoryStorage
from optuna_dashboard import wsgi
from servers import Server, problem, regtune, serving, tiny_study
from sqlalchemy import create_engine, func, select, update

from service.settings import Settings
from service.store.auth import create_token
from service.store.db import Database
from service.store.tables import ApiToken, DatasetRecord, StudyRecord
from trainer.nets.networks import count_parameters
from trainer.specs.study_spec import ModelSpec

ROOT = Path(__file__).resolve().parents[2]

# Small limits, each exceeded below.
MAX_UPLOAD_BYTES = 20_000
MAX_ROWS = 50
MAX_COLUMNS = 8
MAX_TRIALS = 20
MAX_EPOCHS = 30
MAX_PARAMETERS = 50_000  # a hidden layer of 2,631 units on wine (13 features, 3 classes)
MAX_ACTIVE = 2
# One tenant per concern, so that the active-study limit of one test never blocks another.
TENANTS = ("alice", "bob", "busy", "limits")


@dataclass
class Deployment:
    server: Server
    url: str
    db_path: Path
    tokens: dict[str, str]

    def client(self, tenant: str | None = None, token: str | None = None) -> httpx.Client:
        return self.server.client(token or (self.tokens[tenant] if tenant else None))

    def engine(self) -> Any:
        return create_engine(self.url)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("security")
    db_path = root / "security.db"
    url = f"sqlite:///{db_path}"
    # The first token as an operator makes it; the others with the same function in-process.
    made = regtune("token", "create", "alice", database_url=url)
    assert made.returncode == 0, made.stderr
    tokens = {"alice": made.stdout.strip()}
    db = Database(Settings(database_url=url))
    with db.write() as session:
        tokens |= {name: create_token(session, name) for name in TENANTS if name != "alice"}
    db.dispose()
    with serving(
        url,
        root / "serve.log",
        workers=0,
        REGTUNE_MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES),
        REGTUNE_MAX_UPLOAD_ROWS=str(MAX_ROWS),
        REGTUNE_MAX_UPLOAD_COLUMNS=str(MAX_COLUMNS),
        REGTUNE_LIMITS__MAX_TRIALS=str(MAX_TRIALS),
        REGTUNE_LIMITS__MAX_EPOCHS=str(MAX_EPOCHS),
        REGTUNE_LIMITS__MAX_PARAMETERS=str(MAX_PARAMETERS),
        REGTUNE_MAX_ACTIVE_STUDIES=str(MAX_ACTIVE),
    ) as server:
        yield Deployment(server, url, db_path, tokens)


def csv_upload(rows: int = 30, columns: int = 2, name: str = "small.csv") -> dict[str, Any]:
    """``files``/``data`` of a valid CSV upload: ``rows`` rows, ``columns`` features, 2 classes."""
    header = ",".join(f"f{j}" for j in range(columns)) + ",label\n"
    body = "".join(
        ",".join(str((i * 7 + j) % 11) for j in range(columns)) + f",{'ab'[i % 2]}\n"
        for i in range(rows)
    )
    return {"files": {"file": (name, (header + body).encode())}, "data": {"target": "label"}}


@dataclass
class OwnedStudy:
    id: str
    optuna_id: int
    trial_id: int
    dataset_id: str


@pytest.fixture
def alice_study(deployment: Deployment) -> Iterator[OwnedStudy]:
    """A study of alice's (with one running trial, written as a worker would) and a dataset."""
    with deployment.client("alice") as alice:
        dataset = alice.post("/v1/datasets", **csv_upload())
        assert dataset.status_code == 201, dataset.text
        created = alice.post("/v1/studies", json=tiny_study())
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        study = optuna.load_study(study_name=f"regtune-{study_id}", storage=deployment.url)
        trial = study.ask()
        trial.set_user_attr("mark", "untouched")
        yield OwnedStudy(study_id, study._study_id, trial._trial_id, dataset.json()["id"])
        alice.delete(f"/v1/studies/{study_id}")  # gone already if the test deleted it


# --- 1. tokens at rest ------------------------------------------------------------------------


def test_the_database_holds_no_plaintext_token(deployment: Deployment) -> None:
    with deployment.engine().connect() as connection:
        rows = connection.execute(select(ApiToken.__table__)).mappings().all()
    assert {row["tenant"] for row in rows} >= set(TENANTS)
    stored = {row["token_hash"] for row in rows}
    for token in deployment.tokens.values():
        assert hashlib.sha256(token.encode()).hexdigest() in stored
        secret = token.removeprefix("rt_")
        for row in rows:
            for column, value in row.items():
                assert secret not in str(value), f"the token is in column {column}"
    # Not in any table, index or journal page either: the raw bytes of the database files.
    files = [p for p in deployment.db_path.parent.iterdir() if p.name.startswith("security.db")]
    raw = b"".join(p.read_bytes() for p in files)
    assert len(raw) > 0
    for token in deployment.tokens.values():
        assert token.removeprefix("rt_").encode() not in raw


def test_tokens_are_looked_up_by_their_hash_never_compared_as_text(
    deployment: Deployment,
) -> None:
    """A row holding sha256(secret) admits ``secret``; a row holding ``secret`` itself does not,
    and neither does presenting a stored hash (a stolen database yields no usable token)."""
    by_hash, as_text = f"rt_{uuid.uuid4().hex}", f"rt_{uuid.uuid4().hex}"
    with deployment.engine().begin() as connection:
        connection.execute(
            ApiToken.__table__.insert(),
            [
                {
                    "name": "probe-hash",
                    "tenant": "probe",
                    "token_hash": hashlib.sha256(by_hash.encode()).hexdigest(),
                },
                {"name": "probe-text", "tenant": "probe", "token_hash": as_text},
            ],
        )
    try:
        with deployment.client(token=by_hash) as http:
            assert http.get("/v1/studies").status_code == 200
        stolen = hashlib.sha256(deployment.tokens["bob"].encode()).hexdigest()
        for token in (as_text, stolen):
            with deployment.client(token=token) as http:
                assert http.get("/v1/studies").status_code == 401
    finally:
        with deployment.engine().begin() as connection:
            connection.execute(ApiToken.__table__.delete().where(ApiToken.tenant == "probe"))


def calls_named(tree: ast.AST, name: str) -> bool:
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
        for node in ast.walk(tree)
    )


def test_no_token_is_compared_as_plaintext_in_the_source() -> None:
    """Every comparison with the stored hash hashes the presented token; none compares a token
    variable with ``==``/``!=`` (which would stop at the first differing character)."""
    hash_comparisons = 0
    for path in sorted((ROOT / "service").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            names = [ast.unparse(o) for o in operands]
            where = f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"
            if any(n.endswith("token_hash") for n in names):
                hash_comparisons += 1
                others = [o for o, n in zip(operands, names, strict=True) if "token_hash" not in n]
                assert all(calls_named(o, "hash_token") for o in others), where
            elif any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                assert not any(re.search(r"token\b", n, re.IGNORECASE) for n in names), where
    assert hash_comparisons >= 1  # the lookup was found, so the scan looked at the right code


def test_no_token_reaches_the_server_log(deployment: Deployment) -> None:
    """A browser logs in with ``/dashboard?token=…``: the access log must not keep the token."""
    token = deployment.tokens["alice"]
    with deployment.client() as browser:
        login = browser.get("/dashboard", params={"token": token})
        assert login.status_code == 303
        assert browser.get("/v1/studies", headers={"Authorization": f"Bearer {token}"}).is_success
    log = deployment.server.log.read_text()
    assert "/dashboard?token=" in log  # the request was logged, and
    for secret in deployment.tokens.values():
        assert secret.removeprefix("rt_") not in log


# --- 2. 401 on every /v1 route ----------------------------------------------------------------


def v1_operations(http: httpx.Client) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) of every /v1 operation in the served document."""
    document = http.get("/openapi.json").json()
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        if path.startswith("/v1/") or path == "/v1"
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def request_body(operation: dict[str, Any]) -> dict[str, Any]:
    """A valid body for the operation, so that only the missing token can stop it."""
    content = operation.get("requestBody", {}).get("content", {})
    if "multipart/form-data" in content:
        return csv_upload()
    if "application/json" in content:
        return {"json": tiny_study()}
    return {}


def count_rows(deployment: Deployment, model: Any) -> int:
    with deployment.engine().connect() as connection:
        return connection.scalar(select(func.count()).select_from(model)) or 0


def test_every_v1_route_refuses_a_missing_or_wrong_token(
    deployment: Deployment, alice_study: OwnedStudy
) -> None:
    with deployment.client() as anonymous:
        operations = v1_operations(anonymous)
    labels = {f"{method} {path}" for method, path, _ in operations}
    assert {"GET /v1/studies", "POST /v1/studies", "POST /v1/datasets"} <= labels
    values = {"study_id": alice_study.id, "dataset_id": alice_study.dataset_id, "number": "0"}
    stolen_hash = hashlib.sha256(deployment.tokens["alice"].encode()).hexdigest()
    refused: list[dict[str, str]] = [
        {},  # no Authorization header at all
        {"Authorization": f"Bearer rt_{uuid.uuid4().hex}"},  # a wrong token
        {"Authorization": "Bearer"},  # an empty one
        {"Authorization": f"Bearer {stolen_hash}"},  # the stored hash of a real token
        {"Authorization": f"Basic {deployment.tokens['alice']}"},  # the wrong scheme
        {"Cookie": f"regtune_token=rt_{uuid.uuid4().hex}"},  # a wrong dashboard cookie
    ]
    before = count_rows(deployment, StudyRecord), count_rows(deployment, DatasetRecord)
    with httpx.Client(base_url=deployment.server.url, timeout=30) as http:
        for method, template, operation in operations:
            for headers in refused:
                response = http.request(
                    method, fill(template, values), headers=headers, **request_body(operation)
                )
                what = f"{method} {template} with {headers}"
                assert response.status_code == 401, (what, response.text)
                assert "token" in response.json()["detail"], what
                assert response.headers["www-authenticate"] == "Bearer", what
    # Nothing was created, cancelled or deleted on the way.
    assert (count_rows(deployment, StudyRecord), count_rows(deployment, DatasetRecord)) == before
    with deployment.client("alice") as alice:
        assert alice.get(f"/v1/studies/{alice_study.id}").json()["status"] == "queued"
        assert alice.get(f"/v1/studies/{alice_study.id}/trials/0").status_code == 200


# --- 3. tenant isolation ----------------------------------------------------------------------


def anonymized(response: httpx.Response, ids: dict[str, str]) -> str:
    """The 404's message with the ids in it replaced, to compare two of them."""
    detail = response.json()["detail"]
    return detail.replace(ids["study_id"], "ID").replace(ids["dataset_id"], "ID")


def test_another_tenants_study_and_dataset_are_not_found(
    deployment: Deployment, alice_study: OwnedStudy
) -> None:
    """Every /v1 route under a study or dataset id answers bob 404, worded exactly like an id
    that does not exist, and changes nothing; then alice can still use each one."""
    with deployment.client("alice") as alice, deployment.client("bob") as bob:
        operations = [
            (method, template, operation)
            for method, template, operation in v1_operations(bob)
            if "{study_id}" in template or "{dataset_id}" in template
        ]
        labels = {f"{method} {template}" for method, template, _ in operations}
        assert {
            "GET /v1/studies/{study_id}",
            "GET /v1/studies/{study_id}/trials",
            "GET /v1/studies/{study_id}/trials/{number}",
            "POST /v1/studies/{study_id}/cancel",
            "DELETE /v1/studies/{study_id}",
            "GET /v1/datasets/{dataset_id}",
        } <= labels
        theirs = {"study_id": alice_study.id, "dataset_id": alice_study.dataset_id, "number": "0"}
        nobody = {"study_id": uuid.uuid4().hex, "dataset_id": uuid.uuid4().hex, "number": "0"}
        for method, template, operation in operations:
            body = request_body(operation)
            response = bob.request(method, fill(template, theirs), **body)
            missing = bob.request(method, fill(template, nobody), **body)
            what = f"{method} {template}"
            assert response.status_code == 404, (what, response.text)
            assert missing.status_code == 404, (what, missing.text)
            assert anonymized(response, theirs) == anonymized(missing, nobody), what
        # Bob cannot name alice's dataset in a study either: it is unknown to him.
        spec = bob.post("/v1/studies", json=tiny_study(dataset=alice_study.dataset_id))
        assert spec.status_code == 422 and "unknown dataset" in spec.text, spec.text
        # Nothing of alice's changed; and alice herself gets every one of those routes.
        assert alice.get(f"/v1/studies/{alice_study.id}").json()["status"] == "queued"
        for method, template, operation in sorted(operations, key=lambda o: o[0] == "DELETE"):
            response = alice.request(method, fill(template, theirs), **request_body(operation))
            # Her queued study has no final model yet: 409 says so (not a refusal).
            no_model_yet = template.endswith("/model") and response.status_code == 409
            assert response.status_code < 300 or no_model_yet, (method, template, response.text)


def test_lists_show_only_the_tenants_own_items(
    deployment: Deployment, alice_study: OwnedStudy
) -> None:
    with deployment.client("alice") as alice, deployment.client("bob") as bob:
        mine = bob.post("/v1/studies", json=tiny_study(name="bobs"))
        assert mine.status_code == 201, mine.text
        my_dataset = bob.post("/v1/datasets", **csv_upload(name="bobs.csv")).json()["id"]
        try:
            for client, own, other in (
                (alice, (alice_study.id, alice_study.dataset_id), (mine.json()["id"], my_dataset)),
                (bob, (mine.json()["id"], my_dataset), (alice_study.id, alice_study.dataset_id)),
            ):
                studies = {s["id"] for s in client.get("/v1/studies?limit=100").json()}
                datasets = {d["id"] for d in client.get("/v1/datasets").json()}
                assert own[0] in studies and other[0] not in studies
                assert own[1] in datasets and other[1] not in datasets
                names = {
                    s["study_name"] for s in client.get("/api/studies").json()["study_summaries"]
                }
                # Alice's study has no name in its spec, Bob's is "bobs": both are listed
                # under their spec's name (or regtune) made unique by their id.
                own_name, other_name = (
                    f"{'bobs' if study_id == mine.json()['id'] else 'regtune'}-{study_id}"
                    for study_id in (own[0], other[0])
                )
                assert own_name in names and other_name not in names
        finally:
            bob.delete(f"/v1/studies/{mine.json()['id']}")


# --- 4. the dashboard -------------------------------------------------------------------------


def dashboard_routes() -> list[tuple[str, str]]:
    """(method, bottle rule) of every route optuna-dashboard serves."""
    return [(route.method, route.rule) for route in wsgi(InMemoryStorage()).routes]


def dashboard_path(rule: str, study: OwnedStudy) -> str:
    values = {
        "study_id": str(study.optuna_id),
        "trial_id": str(study.trial_id),
        "plot_type": "history",
        "filename": "favicon.ico",
    }

    def value(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        if name == "":
            return ""  # an anonymous wildcard, e.g. /dashboard<:re:(/.*)?>
        return values.get(name, "0123abcd-0000-4000-8000-000000000000")

    return re.sub(r"<([^<>]*)>", value, rule)


def test_the_dashboard_refuses_requests_without_a_token(
    deployment: Deployment, alice_study: OwnedStudy
) -> None:
    routes = dashboard_routes()
    assert ("GET", "/api/studies") in routes  # the table was read
    with deployment.client() as anonymous:
        for method, rule in routes:
            for headers in ({}, {"Authorization": f"Bearer rt_{uuid.uuid4().hex}"}):
                response = anonymous.request(
                    method, dashboard_path(rule, alice_study), headers=headers
                )
                assert response.status_code in (401, 403), (method, rule, response.status_code)
                assert alice_study.id not in response.text and "regtune-" not in response.text
        login = anonymous.get("/dashboard", params={"token": f"rt_{uuid.uuid4().hex}"})
        assert login.status_code == 401 and "not valid" in login.text
        assert "regtune_token" not in login.headers.get("set-cookie", "")


def test_the_dashboard_is_read_only(deployment: Deployment, alice_study: OwnedStudy) -> None:
    """Every write route optuna-dashboard has is refused, even to the study's owner."""
    writes = [(m, r) for m, r in dashboard_routes() if m not in ("GET", "HEAD")]
    assert {m for m, _ in writes} >= {"POST", "PUT", "DELETE"}
    with deployment.client("alice") as alice:
        before = alice.get(f"/api/studies/{alice_study.optuna_id}").json()
        for method, rule in writes:
            response = alice.request(method, dashboard_path(rule, alice_study), json={})
            assert response.status_code == 403, (method, rule, response.text)
            assert "read-only" in response.json()["detail"]
        for method in ("PATCH", "PUT", "POST", "DELETE"):  # on routes it does not even have
            response = alice.request(method, f"/api/studies/{alice_study.optuna_id}")
            assert response.status_code == 403, method
        assert alice.get(f"/api/studies/{alice_study.optuna_id}").json() == before
    trial = optuna.load_study(
        study_name=f"regtune-{alice_study.id}", storage=deployment.url
    ).trials[0]
    assert trial.state == optuna.trial.TrialState.RUNNING  # not told, skipped or deleted
    assert trial.user_attrs == {"mark": "untouched"}


def test_the_dashboard_shows_only_the_callers_studies(
    deployment: Deployment, alice_study: OwnedStudy
) -> None:
    study_scoped = [
        rule for method, rule in dashboard_routes() if method == "GET" and "<study_id" in rule
    ]
    assert "/api/studies/<study_id:int>" in study_scoped
    own = f"/api/studies/{alice_study.optuna_id}"
    with deployment.client("alice") as alice, deployment.client("bob") as bob:
        assert alice.get(own).status_code == 200
        summaries = bob.get("/api/studies").json()["study_summaries"]
        assert alice_study.optuna_id not in [s["study_id"] for s in summaries]
        for rule in study_scoped:
            response = bob.get(dashboard_path(rule, alice_study))
            assert response.status_code == 404, (rule, response.text)
        # The same study id spelled differently is still alice's.
        spelled = [
            f"/api/studies/0{alice_study.optuna_id}",
            "/api/studies/" + "".join(f"%{ord(c):02X}" for c in str(alice_study.optuna_id)),
            f"/api/studies/{alice_study.optuna_id}/",
        ]
        for path in spelled:
            assert bob.get(path).status_code == 404, path
        assert bob.head(own).status_code == 404
        # HEAD on the filtered list works too (and leaks nothing).
        head = bob.head("/api/studies")
        assert head.status_code == 200 and head.content == b"", head.text
        listed = bob.get("/api/studies")
        assert int(head.headers["content-length"]) == len(listed.content)


# --- 5. limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upload", "fragment"),
    [
        pytest.param(
            {"files": {"file": ("big.csv", b"a,label\n" + b"1,0\n" * (MAX_UPLOAD_BYTES // 4))}},
            f"bytes; the limit is {MAX_UPLOAD_BYTES}",
            id="bytes",
        ),
        pytest.param(
            csv_upload(rows=MAX_ROWS + 1),
            f"{MAX_ROWS + 1} rows; the limit is {MAX_ROWS}",
            id="rows",
        ),
        pytest.param(
            csv_upload(columns=MAX_COLUMNS + 1),
            f"{MAX_COLUMNS + 1} feature columns; the limit is {MAX_COLUMNS}",
            id="columns",
        ),
    ],
)
def test_upload_limits(deployment: Deployment, upload: dict[str, Any], fragment: str) -> None:
    with deployment.client("limits") as http:
        before = http.get("/v1/datasets").json()
        response = http.post("/v1/datasets", data={"target": "label"}, files=upload["files"])
        assert response.status_code == 413, response.text
        assert fragment in problem(response), problem(response)
        assert http.get("/v1/datasets").json() == before


def test_uploads_at_the_limits_are_accepted(deployment: Deployment) -> None:
    with deployment.client("limits") as http:
        response = http.post("/v1/datasets", **csv_upload(rows=MAX_ROWS, columns=MAX_COLUMNS))
        assert response.status_code == 201, response.text


def test_trial_and_epoch_limits(deployment: Deployment) -> None:
    with deployment.client("limits") as http:
        over = {
            "body.n_trials": tiny_study(n_trials=MAX_TRIALS + 1),
            "body.training.max_epochs": tiny_study(training={"max_epochs": MAX_EPOCHS + 1}),
        }
        for field, spec in over.items():
            response = http.post("/v1/studies", json=spec)
            assert response.status_code == 422, response.text
            name = field.rsplit(".", 1)[-1]
            bound = MAX_TRIALS if name == "n_trials" else MAX_EPOCHS
            assert f"{field}: Value error, {name} must be ≤ {bound}" in problem(response)
        at = http.post(
            "/v1/studies",
            json=tiny_study(n_trials=MAX_TRIALS, training={"max_epochs": MAX_EPOCHS}),
        )
        assert at.status_code == 201, at.text
        http.delete(f"/v1/studies/{at.json()['id']}")


def wine_parameters(hidden: list[int]) -> int:
    """The true count of the MLP on builtin:wine (13 features, 3 classes), by building it."""
    model = build_model(ModelSpec(hidden=hidden), (13,), 3, dropout=0.0, bn_momentum=0.1)
    return count_parameters(model)


def test_the_parameter_count_is_exact() -> None:
    """The arithmetic the limit uses agrees with the networks that training builds."""
    cases = [
        (ModelSpec(hidden=[16, 8]), (13,)),
        (ModelSpec(hidden=[], batch_norm=False), (5,)),
        (ModelSpec(kind="cnn", hidden=[32], channels=[4, 6]), (1, 8, 8)),
        (ModelSpec(kind="cnn", hidden=[7], channels=[3], kernel_size=4, stride=3), (1, 40)),
        (ModelSpec(kind="cnn", hidden=[], channels=[5, 5, 5], kernel_size=5, stride=1), (2, 9, 7)),
    ]
    for spec, shape in cases:
        built = build_model(spec, shape, 3, dropout=0.1, bn_momentum=0.1)
        assert parameter_count(spec, shape, 3) == count_parameters(built), (spec, shape)


def test_parameter_limit(deployment: Deployment) -> None:
    # The widest single hidden layer within the limit on wine, and one unit wider.
    under = max(
        w
        for w in range(1, 4096)
        if parameter_count(ModelSpec(hidden=[w]), (13,), 3) <= MAX_PARAMETERS
    )
    over = under + 1
    assert wine_parameters([under]) <= MAX_PARAMETERS < wine_parameters([over])
    with deployment.client("limits") as http:
        fits = http.post("/v1/studies", json=tiny_study(model={"hidden": [under]}))
        assert fits.status_code == 201, fits.text
        http.delete(f"/v1/studies/{fits.json()['id']}")
        cases = {
            "body.model": tiny_study(model={"hidden": [over]}),
            "body.search_space.hidden": tiny_study(search_space={"hidden": [[8], [over]]}),
        }
        for field, spec in cases.items():
            response = http.post("/v1/studies", json=spec)
            assert response.status_code == 422, response.text
            text = problem(response)
            assert text.startswith(f"{field}: ") and "max_parameters" in text, text
            assert f"has {wine_parameters([over]):,} parameters" in text, text
            assert f"max_parameters is {MAX_PARAMETERS:,}" in text, text
        # A CNN is counted too (digits is 1×8×8): wide convolutions and a wide head.
        cnn = tiny_study(
            dataset="builtin:digits", model={"kind": "cnn", "channels": [256, 256], "hidden": [64]}
        )
        response = http.post("/v1/studies", json=cnn)
        assert response.status_code == 422 and "max_parameters" in response.text, response.text
        names = {s["name"] for s in http.get("/v1/studies?limit=100").json()}
        assert not any(str(over) in n for n in names)


def test_active_studies_per_tenant(deployment: Deployment) -> None:
    def optuna_studies() -> int:
        return len(optuna.get_all_study_names(deployment.url))

    with deployment.client("busy") as busy, deployment.client("limits") as other:
        ids = []
        for _ in range(MAX_ACTIVE):
            created = busy.post("/v1/studies", json=tiny_study())
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        stored, named = count_rows(deployment, StudyRecord), optuna_studies()
        refused = busy.post("/v1/studies", json=tiny_study())
        assert refused.status_code == 429, refused.text
        assert "max_active_studies" in refused.json()["detail"]
        assert f"has {MAX_ACTIVE} queued or running" in refused.json()["detail"]
        assert (count_rows(deployment, StudyRecord), optuna_studies()) == (stored, named)
        # Per tenant: another tenant is not held back.
        theirs = other.post("/v1/studies", json=tiny_study())
        assert theirs.status_code == 201, theirs.text
        other.delete(f"/v1/studies/{theirs.json()['id']}")
        # A finished study frees its place; a running one holds it like a queued one.
        assert busy.post(f"/v1/studies/{ids[0]}/cancel").status_code == 200
        again = busy.post("/v1/studies", json=tiny_study())
        assert again.status_code == 201, again.text
        ids.append(again.json()["id"])
        with deployment.engine().begin() as connection:
            connection.execute(
                update(StudyRecord).where(StudyRecord.id == ids[1]).values(status="running")
            )
        assert busy.post("/v1/studies", json=tiny_study()).status_code == 429
        for study_id in ids:
            busy.delete(f"/v1/studies/{study_id}")
        last = busy.post("/v1/studies", json=tiny_study())
        assert last.status_code == 201, last.text
        busy.delete(f"/v1/studies/{last.json()['id']}")


# --- 6. no user input reaches eval/exec, pickle, a shell or a file path -----------------------


def qualified_names(tree: ast.Module) -> dict[str, str]:
    """Local name → what it was imported as (``np`` → ``numpy``, ``loads`` → ``pickle.loads``)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def qualified(func: ast.expr, names: dict[str, str]) -> str:
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return ""
    head = names.get(func.id, func.id if func.id in BUILTINS else f"<local>.{func.id}")
    return ".".join([head, *reversed(parts)])


BUILTINS = {"eval", "exec", "compile", "__import__", "open"}
# Calls that run code or unpickle whatever their input holds, whatever the arguments.
ALWAYS = {
    "eval",
    "exec",
    "compile",
    "__import__",
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "_pickle.load",
    "_pickle.loads",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "marshal.load",
    "marshal.loads",
    "shelve.open",
    "os.system",
    "os.popen",
    "pandas.read_pickle",
    "numpy.load",  # allowed only with allow_pickle=False, below
    "torch.load",  # allowed only with weights_only=True, below
    "yaml.load",  # allowed only with a safe Loader, below
    "yaml.unsafe_load",
}
SHELLS = {
    "subprocess.run",
    "subprocess.Popen",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
}
ALWAYS_SHELL = {
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
    "asyncio.create_subprocess_shell",
}


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_constant(node: ast.expr | None, value: Any) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def dangerous_calls(source: str, filename: str) -> list[str]:
    tree = ast.parse(source, filename)
    names = qualified_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = qualified(node.func, names)
        where = f"{filename}:{node.lineno}: {ast.unparse(node)[:120]}"
        if name == "numpy.load":
            if not is_constant(keyword(node, "allow_pickle"), False):
                found.append(f"{where} (numpy.load needs allow_pickle=False)")
        elif name == "torch.load":
            if not is_constant(keyword(node, "weights_only"), True):
                found.append(f"{where} (torch.load needs weights_only=True)")
        elif name == "yaml.load":
            loader = keyword(node, "Loader")
            if loader is None or "Safe" not in ast.unparse(loader):
                found.append(f"{where} (yaml.load needs a SafeLoader)")
        elif name in ALWAYS:
            found.append(f"{where} ({name})")
        elif name in ALWAYS_SHELL:
            found.append(f"{where} ({name} runs a shell)")
        elif name in SHELLS:
            shell = keyword(node, "shell")
            if shell is not None and not is_constant(shell, False):
                found.append(f"{where} ({name} with shell={ast.unparse(shell)})")
        elif name.startswith("os.exec") or name.startswith("os.spawn"):
            found.append(f"{where} ({name})")
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    """The scanner itself, on code that does each forbidden thing (and some that is fine)."""
    bad = """
import pickle, subprocess, os, torch
import numpy as np
from pickle import loads as unpickle
eval(text)
exec(text)
pickle.load(handle)
unpickle(data)
torch.load(path)
torch.load(path, weights_only=False)
np.load(path, allow_pickle=True)
np.load(path)
subprocess.run(command, shell=True)
subprocess.Popen(command, shell=flag)
subprocess.getoutput(command)
os.system(command)
"""
    fine = """
import subprocess, torch
import numpy as np
from fastapi import Path
model.eval()
np.load(buffer, allow_pickle=False)
torch.load(path, weights_only=True)
subprocess.run([sys.executable, "-m", "x"])
subprocess.run(["ls"], shell=False)
Path(ge=0)
"""
    found = dangerous_calls(bad, "bad.py")
    assert [int(f.split(":")[1]) for f in found] == list(range(5, 17)), found
    assert dangerous_calls(fine, "fine.py") == []


def test_no_eval_pickle_shell_or_unsafe_load_in_the_source() -> None:
    files = sorted([*(ROOT / "trainer").rglob("*.py"), *(ROOT / "service").rglob("*.py")])
    assert len(files) > 20
    found = [
        problem
        for path in files
        for problem in dangerous_calls(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == [], "\n".join(found)


# Modules that run on a request or in a worker on a tenant's data: none opens a file by a path,
# so no name in a request can reach the file system (the CLI reads the user's own local files;
# db.py opens a lock file beside the operator's SQLite database).
REQUEST_MODULES = [
    "service/http/app.py",
    "service/store/auth.py",
    "service/http/dashboard.py",
    "service/store/uploads.py",
    "service/store/lifecycle.py",
    "service/store/stored_models.py",
    "service/store/trials.py",
    "service/work/worker.py",
    "service/http/schemas.py",
    "service/store/tables.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "service" / "http" / "api").glob("*.py")),
]
FILE_ACCESS = {
    "open",
    "io.open",
    "os.open",
    "os.fdopen",
    "pathlib.Path",
    "pathlib.PurePath",
    "shutil.copy",
    "shutil.copyfile",
    "shutil.rmtree",
    "tempfile.NamedTemporaryFile",
    "trainer.data.readers.load_dataset",
}
PATH_METHODS = {"read_bytes", "read_text", "write_bytes", "write_text", "open", "unlink"}


def test_request_handling_code_never_opens_a_path() -> None:
    found = []
    for relative in REQUEST_MODULES:
        tree = ast.parse((ROOT / relative).read_text(), relative)
        names = qualified_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
            if qualified(node.func, names) in FILE_ACCESS or method in PATH_METHODS:
                found.append(f"{relative}:{node.lineno}: {ast.unparse(node)[:120]}")
    assert found == [], "\n".join(found)


def test_a_dataset_reference_is_never_a_file_path(deployment: Deployment, tmp_path: Path) -> None:
    """A readable, valid NPZ file named by absolute path, by ``../`` from the server's working
    directory or as a URL is refused like any unknown name: if the server had read it, the
    study would have been accepted."""
    X = np.random.default_rng(0).normal(size=(60, 4))
    target = tmp_path / "valid.npz"
    np.savez(target, X=X, y=np.arange(60) % 2)
    relative = os.path.relpath(target, ROOT)  # the server runs in the repository root
    assert relative.startswith("../")
    references = [
        str(target),
        relative,
        f"file://{target}",
        f"builtin:{relative}",
        f"builtin:../../{target.name}",
        "../../etc/passwd",
        "/etc/passwd",
        "builtin:/etc/passwd",
        "~/.ssh/id_rsa",
        "..%2F..%2Fetc%2Fpasswd",
    ]
    with deployment.client("limits") as http:
        before = count_rows(deployment, StudyRecord)
        for reference in references:
            response = http.post("/v1/studies", json=tiny_study(dataset=reference))
            assert response.status_code == 422, (reference, response.text)
            text = problem(response)
            assert text.startswith("body.dataset: unknown"), (reference, text)
            assert "root:" not in text and "PRIVATE" not in text
        assert count_rows(deployment, StudyRecord) == before


def test_an_upload_file_name_is_never_a_path(deployment: Deployment, tmp_path: Path) -> None:
    """The upload's file name is a label: a traversal in it writes nothing anywhere."""
    planted = tmp_path / f"{uuid.uuid4().hex}.csv"
    name = os.path.relpath(planted, ROOT)
    with deployment.client("limits") as http:
        for filename in (name, str(planted)):
            response = http.post("/v1/datasets", **csv_upload(name=filename))
            assert response.status_code == 201, response.text
            assert response.json()["name"] == filename
    assert not planted.exists() and list(tmp_path.iterdir()) == []
