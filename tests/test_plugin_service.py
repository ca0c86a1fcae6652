"""A plugin network through the whole service: real HTTP, a real worker process, the model file.

The test plugins' distribution (``tests/plugins``) is "installed" by putting its folder on
``PYTHONPATH``, where ``importlib.metadata`` finds its ``.dist-info`` as it finds any.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from servers import serving, start_worker, tiny_study, wait_for, wait_status

from trainer.model_file.loading import load_model

pytestmark = pytest.mark.slow

PLUGINS = str(Path(__file__).parent / "plugins")
STUDY = tiny_study(
    dataset="builtin:digits",
    n_trials=2,
    model={"kind": "plugin", "name": "tiny_convnet", "options": {"width": 2}},
    training={"max_epochs": 2},
    cv={"folds": 2, "test_fraction": 0.2},
)


def test_a_plugin_study_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'regtune.db'}"
    with (
        serving(url, tmp_path / "serve.log", workers=1, PYTHONPATH=PLUGINS) as server,
        server.client() as http,
    ):
        created = http.post("/v1/studies", json=STUDY)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
        body = wait_status(http, study_id, ("completed", "failed"))
        assert body["status"] == "completed", body
        assert body["network"] == {
            "kind": "plugin",
            "name": "tiny_convnet",
            "options": {"width": 2},
            "package": "regtune-test-networks",
            "version": "1.2.0",
        }
        trials = http.get(f"/v1/studies/{study_id}/trials").json()["items"]
        assert [t["state"] for t in trials] == ["complete", "complete"]
        report = http.get(f"/v1/studies/{study_id}/report").text
        assert "plugin tiny_convnet (regtune-test-networks 1.2.0), width=2" in report
        model_file = http.get(f"/v1/studies/{study_id}/model")
        assert model_file.status_code == 200
    monkeypatch.syspath_prepend(PLUGINS)  # this process has the plugin too: it loads
    model = load_model(io.BytesIO(model_file.content))
    assert model.metadata["architecture"]["network"]["name"] == "tiny_convnet"
    assert isinstance(model.model[1], torch.nn.Module)  # the plugin's own module, unflattened
    assert model.predict(torch.zeros(3, 64).numpy()).shape == (3,)


def test_a_worker_without_the_plugin_fails_its_trials_saying_so(tmp_path: Path) -> None:
    """The API host has the plugin (the spec is accepted); the worker does not."""
    url = f"sqlite:///{tmp_path / 'regtune.db'}"
    with serving(url, tmp_path / "serve.log", workers=0, PYTHONPATH=PLUGINS) as server:
        worker = start_worker(url, tmp_path / "worker.log", PYTHONPATH="")
        try:
            with server.client() as http:
                created = http.post("/v1/studies", json=STUDY)
                assert created.status_code == 201, created.text
                study_id = created.json()["id"]
                body = wait_status(http, study_id, ("failed",))
                assert "network plugin 'tiny_convnet' is not installed on this host" in (
                    body["error"] or ""
                )
                trials = wait_for(
                    lambda: http.get(f"/v1/studies/{study_id}/trials").json()["items"],
                    what="the failed trials",
                )
                assert trials and all(t["state"] == "fail" for t in trials)
                assert all("is not installed on this host" in t["fail_reason"] for t in trials)
        finally:
            worker.terminate()
            worker.wait(30)
