"""The tree shows the architecture, and keeps showing it: imports follow the parts.

``trainer/`` imports nothing of ``service/``. In ``service/``: ``cli`` stands above ``http``
and ``work``, both above ``store``, ``settings`` and ``text`` at the ground; no import runs back up.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import trainer

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


# trainer/'s parts from the ground up: a part imports only parts on lower floors (and its own).
# The top-level modules (device, lifetime, rng, torch_internals) are the ground floor.
FLOORS = {"specs": 1, "data": 2, "nets": 3, "engines": 4, "model_file": 5, "tuning": 6}
TOP_MODULES = 6  # at most this many modules beside the parts, the front door included


def trainer_modules() -> dict[str, Path]:
    """Every module of trainer/ by its dotted name."""
    modules = {}
    for path in sources("trainer"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def floor(module: str) -> int:
    """A module's floor: its part's, 0 for the ground floor, 7 for the front door."""
    if module == "trainer":
        return len(FLOORS) + 1
    return FLOORS.get(module.split(".")[1], 0)


def trainer_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The trainer modules a file imports, lazily or not: ``from trainer.x import y`` is
    ``trainer.x.y`` when y is a module, else ``trainer.x``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module in known:
            for alias in node.names:
                names.add(f"{node.module}.{alias.name}")
                if f"{node.module}.{alias.name}" not in known:
                    names.add(node.module)
    return names & set(known)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of the import graph meets, as the modules along it."""
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Who imports whom in trainer/; a package's ``__init__`` (the front door included) is
    no edge: it is run before its modules, and imports none of them eagerly."""
    packages = {m for m, p in known.items() if p.name == "__init__.py"}
    return {
        m: trainer_imports(p, known) - packages - {m} for m, p in known.items() if m not in packages
    }


def test_trainer_has_few_top_level_modules_and_its_parts() -> None:
    top = sorted(p.name for p in (ROOT / "trainer").glob("*.py"))
    parts = sorted(p.parent.name for p in (ROOT / "trainer").glob("*/__init__.py"))
    assert len(top) <= TOP_MODULES, top
    assert parts == sorted(FLOORS)


def test_each_part_says_what_it_holds_and_may_import() -> None:
    for part in FLOORS:
        doc = ast.get_docstring(ast.parse((ROOT / "trainer" / part / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), part


def test_no_part_imports_a_part_above_it() -> None:
    known = trainer_modules()
    upward = [
        f"{module} imports {name}"
        for module, path in known.items()
        if module != "trainer"
        for name in sorted(trainer_imports(path, known))
        if floor(name) > floor(module) or name == "trainer"
    ]
    assert upward == []


def test_no_import_cycle_in_trainer() -> None:
    """Lazy imports included: a function-level import that runs back is still a cycle."""
    assert import_cycles(import_graph(trainer_modules())) == []


def test_the_cycle_check_sees_a_lazy_cycle(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "__init__.py"
    a.write_text("from trainer.engines import b\n")
    b.write_text("def f():\n    from trainer.engines.a import g\n")
    c.write_text("")
    known = {"trainer.engines.a": a, "trainer.engines.b": b, "trainer.engines": c}
    assert import_cycles(import_graph(known)) == [
        ["trainer.engines.a", "trainer.engines.b", "trainer.engines.a"]
    ]


@pytest.mark.parametrize("part", ["service", "benchmarks"])
def test_service_and_benchmarks_use_the_front_door(part: str) -> None:
    """``from trainer import X``: a part of trainer/ may move without touching its users."""
    deep = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sources(part)
        for name in sorted(imported(path))
        if name.startswith("trainer.") and name.removeprefix("trainer.") not in trainer.__all__
    ]
    assert deep == []


def test_the_front_door_lists_each_name_once_and_types_it() -> None:
    """``_HOME`` (what loads at run time) and the TYPE_CHECKING imports (what mypy sees) agree,
    and every name loads."""
    tree = ast.parse((ROOT / "trainer" / "__init__.py").read_text())
    typed = {
        alias.asname or alias.name: node.module
        for block in tree.body
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    homes = {
        name: home.rsplit(".", 1)[0] if home.endswith("." + name) else home
        for name, home in trainer._HOME.items()
    }
    assert typed == homes
    assert all(getattr(trainer, name) is not None for name in trainer.__all__)
