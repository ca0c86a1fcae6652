"""A study shows only the fields its network kind has: no template widths (``hidden``) for a
``layers`` stack or a plugin, no ``channels``/``kernel_size``/``stride`` for an MLP; over real
HTTP (the status's ``network`` and best configuration), in ``regtune status`` and in the report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from servers import regtune, serving, tiny_study, wait_status

pytestmark = pytest.mark.slow

PLUGINS = str(Path(__file__).parent / "plugins")
TINY = {"n_trials": 2, "training": {"max_epochs": 2}, "cv": {"folds": 2}}
LAYERS = [{"type": "linear", "out": 8}, {"type": "relu"}, {"type": "dropout"}, {"type": "linear"}]
STUDIES = {
    "layers": tiny_study(model={"kind": "layers", "layers": LAYERS}, **TINY),
    "plugin": tiny_study(
        dataset="builtin:digits",
        model={"kind": "plugin", "name": "tiny_convnet", "options": {"width": 2}},
        **TINY,
    ),
    "mlp": tiny_study(model={"kind": "mlp", "hidden": [8]}, **TINY),
}
TEMPLATE = {"hidden", "batch_norm", "channels", "kernel_size", "stride", "dropout_groups"}


def config_rows(report: str) -> set[str]:
    """The hyperparameters the report's best configuration lists."""
    section = report.split('id="best-configuration"', 1)[1].split("</section>", 1)[0]
    return set(re.findall(r"<code>([^<]+)</code>", section))


def test_each_network_kind_shows_its_own_fields(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'regtune.db'}"
    with (
        serving(url, tmp_path / "serve.log", workers=1, PYTHONPATH=PLUGINS) as server,
        server.client() as http,
    ):
        ids = {}
        for kind, spec in STUDIES.items():
            created = http.post("/v1/studies", json=spec)
            assert created.status_code == 201, created.text
            ids[kind] = created.json()["id"]
        shown = {}
        for kind, study_id in ids.items():
            body = wait_status(http, study_id, ("completed", "failed"))
            assert body["status"] == "completed", body
            status = regtune(
                "status", study_id, database_url=url, REGTUNE_URL=server.url, COLUMNS="200"
            )
            assert status.returncode == 0, status.stderr
            report = http.get(f"/v1/studies/{study_id}/report").text
            shown[kind] = (body, status.stdout, config_rows(report))

    for kind in ("layers", "plugin"):
        body, table, rows = shown[kind]
        assert not TEMPLATE & set(body["network"]), body["network"]
        assert "hidden" not in body["best"]["config"], body["best"]["config"]
        assert not re.search(r"│ hidden\b", table), table
        assert "hidden" not in rows and {"weight_decay", "dropout", "patience"} <= rows, rows
    assert shown["layers"][0]["network"] == {"kind": "layers", "layers": LAYERS}

    body, table, rows = shown["mlp"]
    assert body["network"] == {
        "kind": "mlp",
        "hidden": [8],
        "batch_norm": True,
        "dropout_groups": "shared",
    }
    assert body["best"]["config"]["hidden"] == [8]
    assert re.search(r"│ hidden +│ \[8\] \(fixed\)", table), table
    assert "hidden" in rows
