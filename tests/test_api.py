"""Every 4xx path of the API, over real HTTP (a server with no workers, so nothing runs)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from servers import Server, regtune, serving, tiny_study, workerless_server

server = workerless_server(
    "api", REGTUNE_MAX_UPLOAD_BYTES="20000", REGTUNE_LIMITS__MAX_TRIALS="100"
)


def fields(response) -> dict[str, str]:
    """FastAPI's 422 list as {'dotted.field': message}."""
    assert response.status_code == 422, response.text
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in response.json()["detail"]}


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"cv": {"folds": 1}}, "body.cv.folds", "greater than or equal to 2"),
        (
            {"search_space": {"dropout": {"low": 0.5, "high": 0.1}}},
            "body.search_space.dropout",
            "low (0.5) must be < high (0.1)",
        ),
        ({"search_space": {"bn_momentum": 0}}, "body.search_space.bn_momentum", "(0, 1]"),
        ({"search_space": {"max_norm": -1}}, "body.search_space.max_norm", "(0, inf)"),
        ({"n_trials": 101}, "body.n_trials", "n_trials must be ≤ 100"),
        (
            {"model": {"kind": "transformer"}},
            "body.model.kind",
            "'mlp', 'cnn', 'layers' or 'plugin'",
        ),
        ({"colour": "blue"}, "body.colour", "Extra inputs are not permitted"),
    ],
)
def test_invalid_spec_fields_are_named(
    server: Server, change: dict, field: str, fragment: str
) -> None:
    with server.client() as http:
        found = fields(http.post("/v1/studies", json=tiny_study(**change)))
    assert field in found and fragment in found[field], found


def test_missing_dataset_field(server: Server) -> None:
    with server.client() as http:
        assert "body.dataset" in fields(http.post("/v1/studies", json={"n_trials": 2}))


def test_unknown_dataset(server: Server) -> None:
    with server.client() as http:
        found = fields(http.post("/v1/studies", json=tiny_study(dataset="0123abcd")))
        assert "unknown dataset '0123abcd'" in found["body.dataset"]
        found = fields(http.post("/v1/studies", json=tiny_study(dataset="builtin:imagenet")))
        assert "unknown built-in dataset" in found["body.dataset"]


def test_spec_that_does_not_fit_the_dataset(server: Server) -> None:
    with server.client() as http:
        found = fields(http.post("/v1/studies", json=tiny_study(objective={"metric": "mse"})))
        assert "needs a regression dataset" in found["body.spec"]
        found = fields(http.post("/v1/studies", json=tiny_study(model={"kind": "cnn"})))
        assert "needs inputs with a spatial shape" in found["body.model.kind"]
        rotated = tiny_study(search_space={"augment.rotate": 10})  # wine: a table
        found = fields(http.post("/v1/studies", json=rotated))
        assert found["body.search_space.augment.rotate"] == (
            "search_space.augment.rotate: needs images [C, H, W], the dataset is a table of 13 "
            "features"
        )


def test_unknown_study_and_trial(server: Server) -> None:
    with server.client() as http:
        for path in ("/v1/studies/nope", "/v1/studies/nope/trials", "/v1/studies/nope/trials/0"):
            response = http.get(path)
            assert response.status_code == 404 and "not found" in response.json()["detail"]
        assert http.post("/v1/studies/nope/cancel").status_code == 404
        assert http.delete("/v1/studies/nope").status_code == 404
        study = http.post("/v1/studies", json=tiny_study()).json()
        missing = http.get(f"/v1/studies/{study['id']}/trials/7")
        assert missing.status_code == 404 and "no trial 7" in missing.json()["detail"]


def test_every_other_path_and_method_under_v1_answers_json(server: Server) -> None:
    """The dashboard owns the root, but not /v1: no HTML page, no dashboard 403 there."""
    with server.client() as http:
        for method, path in [
            ("GET", "/v1/nonexistent"),
            ("POST", "/v1/nonexistent"),
            ("GET", "/v1"),
            ("GET", "/v1/studies/x/nothing/here"),
        ]:
            response = http.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
            assert response.headers["content-type"] == "application/json"
            assert response.json()["detail"] == (
                f"no such path {path} in the API (its paths are listed at /docs)"
            )
        for method, path, allowed in [
            ("PUT", "/v1/studies/x", "DELETE, GET"),
            ("DELETE", "/v1/datasets", "GET, POST"),
            ("PATCH", "/v1/datasets/x", "DELETE, GET"),
            ("GET", "/v1/studies/x/cancel", "POST"),
        ]:
            response = http.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            assert response.headers["allow"] == allowed
            assert response.json()["detail"] == f"{method} is not allowed on {path}; use {allowed}"
        # The dashboard still has the rest of the root.
        assert http.get("/dashboard").status_code == 200


def test_cancel_then_cancel_again_conflicts(server: Server) -> None:
    with server.client() as http:
        study = http.post("/v1/studies", json=tiny_study()).json()
        cancelled = http.post(f"/v1/studies/{study['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        again = http.post(f"/v1/studies/{study['id']}/cancel")
        assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


def test_delete_removes_the_study_and_its_optuna_study(server: Server) -> None:
    with server.client() as http:
        study = http.post("/v1/studies", json=tiny_study()).json()
        assert http.delete(f"/v1/studies/{study['id']}").status_code == 204
        assert http.get(f"/v1/studies/{study['id']}").status_code == 404
        names = [s["study_name"] for s in http.get("/api/studies").json()["study_summaries"]]
        assert f"regtune-{study['id']}" not in names


def npz_bytes(X: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    return buffer.getvalue()


def test_upload_then_use_the_dataset(server: Server) -> None:
    csv = "a,b,label\n" + "".join(f"{i},{i % 7},{'yes' if i % 2 else 'no'}\n" for i in range(60))
    with server.client() as http:
        response = http.post(
            "/v1/datasets", files={"file": ("small.csv", csv.encode())}, data={"target": "label"}
        )
        assert response.status_code == 201, response.text
        record = response.json()
        assert (record["n_samples"], record["n_features"], record["classes"]) == (
            60,
            2,
            ["no", "yes"],
        )
        assert http.get(f"/v1/datasets/{record['id']}").json()["sha256"] == record["sha256"]
        assert record["id"] in [d["id"] for d in http.get("/v1/datasets").json()]
        created = http.post("/v1/studies", json=tiny_study(dataset=record["id"]))
        assert created.status_code == 201, created.text
        # 30 rows per class cannot make 20 stratified folds after holding out half.
        spec = tiny_study(dataset=record["id"], cv={"folds": 20, "test_fraction": 0.5})
        found = fields(http.post("/v1/studies", json=spec))
        assert "class 'no' has 30 samples" in found["body.dataset"], found


@pytest.mark.parametrize(
    ("filename", "content", "data", "fragment"),
    [
        ("x.csv", b"a,label\n1,0\n2,oops\n", {}, "needs the form field 'target'"),
        ("x.csv", b"a,label\n1,0\ninf,1\n", {"target": "label"}, "'inf' is not finite"),
        ("x.csv", b"a,label\n1,0\n2,\n", {"target": "label"}, "target column 'label' is blank"),
        (
            "x.csv",
            b"a,label\n1,0\n2,1\n",
            {"target": "y"},
            "target column 'y' not in the CSV header",
        ),
        ("x.txt", b"hello", {}, "upload a .csv or an .npz file"),
        ("x.npz", b"not a zip", {}, "not a readable NPZ"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_stored(
    server: Server, filename: str, content: bytes, data: dict, fragment: str
) -> None:
    with server.client() as http:
        before = len(http.get("/v1/datasets").json())
        found = fields(http.post("/v1/datasets", files={"file": (filename, content)}, data=data))
        assert fragment in found["body.file"], found
        assert len(http.get("/v1/datasets").json()) == before


def test_oversized_upload_is_413(server: Server) -> None:
    X = np.random.default_rng(0).normal(size=(200, 20))
    big = npz_bytes(X, np.arange(200) % 2)  # ~32 kB against a 20 kB limit
    with server.client() as http:
        response = http.post("/v1/datasets", files={"file": ("big.npz", big)})
        assert response.status_code == 413 and "limit" in response.json()["detail"]
        huge = http.post("/v1/datasets", files={"file": ("huge.npz", b"0" * 200_000)})
        assert huge.status_code == 413


def test_tokens_and_tenants(tmp_path: Path) -> None:
    """Once a token exists every /v1 request needs one, and tenants see only their own."""
    url = f"sqlite:///{tmp_path / 'auth.db'}"
    with serving(url, tmp_path / "serve.log", workers=0) as server:
        with server.client() as anonymous:
            assert anonymous.get("/v1/studies").status_code == 200  # open: no token yet
        alice = regtune("token", "create", "alice", database_url=url).stdout.strip()
        bob = regtune("token", "create", "bob", database_url=url).stdout.strip()
        assert alice.startswith("rt_") and alice != bob
        init = regtune("token", "create", "admin", "--only-if-none", database_url=url)
        assert init.returncode == 0 and init.stdout == "" and "exists already" in init.stderr
        with (
            server.client() as anonymous,
            server.client("rt_wrong") as wrong,
            server.client(alice) as a,
            server.client(bob) as b,
        ):
            for client in (anonymous, wrong):
                response = client.get("/v1/studies")
                assert response.status_code == 401 and "token" in response.json()["detail"]
                assert client.post("/v1/studies", json=tiny_study()).status_code == 401
                assert client.get("/api/studies").status_code == 401
                assert client.get("/dashboard").status_code == 401  # the login page
            study = a.post("/v1/studies", json=tiny_study()).json()
            assert a.get(f"/v1/studies/{study['id']}").status_code == 200
            assert b.get(f"/v1/studies/{study['id']}").status_code == 404
            assert b.post(f"/v1/studies/{study['id']}/cancel").status_code == 404
            assert b.delete(f"/v1/studies/{study['id']}").status_code == 404
            assert b.get("/v1/studies").json() == []
            # The dashboard: read-only, and each tenant sees only its own studies.
            ids = [s["study_id"] for s in a.get("/api/studies").json()["study_summaries"]]
            assert len(ids) == 1
            assert b.get("/api/studies").json()["study_summaries"] == []
            assert b.get(f"/api/studies/{ids[0]}").status_code == 404
            assert a.get(f"/api/studies/{ids[0]}").status_code == 200
            assert a.delete(f"/api/studies/{ids[0]}").status_code == 403
            assert a.post(f"/api/studies/{ids[0]}/rename", json={}).status_code == 403
        # A browser logs in once with ?token=, then the cookie carries it.
        with server.client() as browser:
            login = browser.get("/dashboard", params={"token": alice})
            assert login.status_code == 303 and "regtune_token" in login.headers["set-cookie"]
            browser.cookies.set("regtune_token", alice)
            assert browser.get("/dashboard").status_code == 200
            assert len(browser.get("/api/studies").json()["study_summaries"]) == 1


def test_public_bind_without_a_token_is_refused(tmp_path: Path) -> None:
    done = regtune(
        "serve", "--host", "0.0.0.0", "--port", "0", database_url=f"sqlite:///{tmp_path / 'x.db'}"
    )
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0 with no API token" in done.stderr
