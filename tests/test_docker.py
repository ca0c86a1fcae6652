"""docker/ against the real schemas, offline: the compose file against the Compose
specification (check-jsonschema's vendored copy), every Kubernetes manifest against the API
schemas of Kubernetes releases (kubernetes-validate ships them), strictly: an unknown or
misspelt key fails. No Docker engine or cluster runs them here; these checks are what stands
between a typo and a user's deployment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker/docker-compose.yml"
MANIFESTS = sorted((ROOT / "docker/k8s").glob("*.yaml"))
# Kubernetes keeps its three newest minor releases maintained: 1.37 (the newest whose schemas
# kubernetes-validate ships; pyproject.toml asks for a version that has them) down to 1.35.
KUBERNETES = ["1.35.0", "1.37.0"]
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def resources(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_the_compose_file_follows_the_compose_specification() -> None:
    checked = check_compose(COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_compose_check_refuses_a_misspelt_key(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("depends_on:", "depends_onn:", 1))
    checked = check_compose(broken)
    assert checked.returncode == 1 and "depends_onn" in checked.stdout, checked.stdout


def test_there_are_manifests_to_check() -> None:
    kinds = {r["kind"] for path in MANIFESTS for r in resources(path)}
    assert kinds == {"Deployment", "Service", "StatefulSet", "Secret", "Job"}


@pytest.mark.parametrize("version", KUBERNETES)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_each_manifest_follows_the_kubernetes_api(path: Path, version: str) -> None:
    for resource in resources(path):
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_manifest_check_refuses_a_misspelt_key() -> None:
    (worker,) = resources(ROOT / "docker/k8s/worker.yaml")
    worker["spec"]["replica"] = worker["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(worker, KUBERNETES[-1], strict=True)
