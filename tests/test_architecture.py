"""The tree shows the architecture, and keeps showing it: imports follow the parts.

``trainer/`` imports nothing of ``service/``. In ``service/``: ``cli`` stands above ``http``
and ``work``, both above ``store``, ``settings`` and ``text`` at the ground; no import runs back up.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What each part may not import (anything else of service/ and trainer/ it may).
BANNED = {
    "trainer": ("service",),
    "service/store": ("service.http", "service.work", "service.cli"),
    "service/http": ("service.work", "service.cli"),
    "service/work": ("service.http", "service.cli"),
    "service/settings.py": ("service.store", "service.http", "service.work", "service.cli"),
    "service/text.py": ("service.store", "service.http", "service.work", "service.cli"),
}
MAX_LINES = 600


def imported(path: Path) -> set[str]:
    """Every module a file imports, by its dotted name (``from a import b``: ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def sources(*parts: str) -> list[Path]:
    """The Python files of each part (a folder, or one module)."""
    paths = [ROOT / part for part in parts]
    return sorted(q for p in paths for q in ([p] if p.is_file() else p.rglob("*.py")))


@pytest.mark.parametrize("part", list(BANNED))
def test_no_import_runs_back_up(part: str) -> None:
    found = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sources(part)
        for name in sorted(imported(path))
        if any(name == banned or name.startswith(banned + ".") for banned in BANNED[part])
    ]
    assert found == []


def test_the_check_sees_an_import_that_runs_back_up(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from service.http.schemas import StudyOut\nimport service.work.worker\n")
    assert {"service.http.schemas.StudyOut", "service.work.worker"} <= imported(module)


def test_no_module_mixes_jobs_at_a_glance() -> None:
    """One job per module keeps each short: none of trainer/ and service/ over 600 lines."""
    long = {
        str(p.relative_to(ROOT)): n
        for p in sources("trainer", "service")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_two_modules_share_a_name() -> None:
    """A name says what a module holds; the routers of ``http/api`` are named for their
    resources, and the migrations for their revisions."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in sources("trainer", "service"):
        relative = path.relative_to(ROOT)
        if "migrations" in relative.parts or relative.parent.name == "api":
            continue
        name = path.parent.name if path.name == "__init__.py" else path.stem
        by_name[name].append(str(relative))
    assert {n: ps for n, ps in by_name.items() if len(ps) > 1 and n != "__main__"} == {}
