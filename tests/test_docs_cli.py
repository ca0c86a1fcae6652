"""Every ``regtune`` command, flag and ``REGTUNE_*`` variable that the README, docs/ and docker/
name exists: a renamed flag or setting fails here, not in a user's deployment.

The commands are the CLI's own (its click commands, from ``typer.main.get_command``), the
variables ``Settings``' (pydantic-settings, prefix ``REGTUNE_``, nested ``__``) or ones the
code reads by name; the deployment files' commands are parsed by the CLI itself.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from markdown_code import blocks, commands, inline_code, shell_lines
from pydantic import BaseModel

from service.cli import app
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "docker/README.md"]
DEPLOYMENT = [
    ROOT / "docker/docker-compose.yml",
    *sorted((ROOT / "docker/k8s").glob("*.yaml")),
    ROOT / "docker/Dockerfile",
]
VARIABLE = re.compile(r"\bREGTUNE_[A-Z0-9_]*[A-Z0-9]")
CLI = typer.main.get_command(app)
# Flags of other tools that the docs name in a code span of their own.
OTHER_TOOLS_FLAGS = {"--gpus", "--scale", "--stop-timeout", "--dry-run"}


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- what exists ---------------------------------------------------------------------------


def settings_variables(model: type[BaseModel] = Settings, prefix: str = "REGTUNE_") -> set[str]:
    """``REGTUNE_DATABASE_URL`` and so on, nested models as ``REGTUNE_LIMITS__MAX_TRIALS``."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(prefix + name.upper())
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names |= settings_variables(kind, f"{prefix}{name.upper()}__")
    return names


def variables_read_by_name() -> set[str]:
    """``REGTUNE_*`` names that the code reads itself (the client's ``REGTUNE_URL``...)."""
    found: set[str] = set()
    for path in [*(ROOT / "service").rglob("*.py"), *(ROOT / "trainer").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found |= set(VARIABLE.findall(node.value))
    return found


def compose_variables() -> set[str]:
    """The variables docker-compose.yml substitutes (``${REGTUNE_API_PORT:-8000}``): Compose's,
    set in the shell or docker/.env, not regtune's."""
    text = (ROOT / "docker/docker-compose.yml").read_text()
    return set(re.findall(r"\$\{(REGTUNE_\w+?)(?::?-[^}]*)?\}", text))


def subcommands(command: Any) -> dict[str, Any]:
    return getattr(command, "commands", {})


def flags(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if param.param_type_name == "option":
            names |= {*param.opts, *param.secondary_opts}
    return names


def all_flags(command: Any = CLI) -> set[str]:
    return flags(command).union(*(all_flags(sub) for sub in subcommands(command).values()))


def problems_of(args: list[str]) -> list[str]:
    """What in ``regtune ARGS`` the CLI does not have: a command or a flag (names only: the
    docs write placeholders such as ``$ID`` or ``auto|cpu|cuda:N`` for values)."""
    command, path = CLI, ["regtune"]
    args = [a.strip("[]") for a in args if a.strip("[].")]
    while subcommands(command) and args and not args[0].startswith("-"):
        name = args.pop(0)
        if name not in subcommands(command):
            return [f"no command {' '.join([*path, name])!r}"]
        command, path = subcommands(command)[name], [*path, name]
    return [
        f"{' '.join(path)} has no option {arg.split('=')[0]!r}"
        for arg in args
        if arg.startswith("-") and arg.split("=")[0] not in flags(command)
    ]


def parse_fully(args: list[str]) -> None:
    """Parse a concrete command line as ``regtune`` would (types, arguments), without running
    it: a wrong value or an extra argument raises click's usage error."""
    command, path, rest = CLI, "regtune", list(args)
    while subcommands(command):
        name = rest.pop(0)
        command, path = subcommands(command)[name], f"{path} {name}"
    command.make_context(path, rest)


# --- what the documents name ---------------------------------------------------------------


def documented_calls() -> Iterator[tuple[str, list[str]]]:
    """Every ``regtune ...`` of the docs' code (blocks and spans) and deployment files'
    comments, with where it is."""
    for path in MARKDOWN:
        text = path.read_text()
        pieces = [b.text for b in blocks(text)] + inline_code(text)
        for piece in pieces:
            for line in shell_lines(piece):
                for args in commands(line, "regtune"):
                    yield relative(path), args
    for path in DEPLOYMENT:
        for line in path.read_text().splitlines():
            comment = line.partition("#")[2]
            # A command in a comment is indented ("#   kubectl ..."); prose quotes one in
            # backticks ("# `regtune serve` refuses ...").
            pieces = re.findall(r"`([^`]+)`", comment)
            if comment.startswith("  "):
                pieces.append(comment)
            for piece in pieces:
                for args in commands(piece, "regtune"):
                    yield relative(path), args


def deployment_calls() -> Iterator[tuple[str, list[str]]]:
    """The command lines that the image, compose and the manifests run (entrypoint regtune)."""
    compose = yaml.safe_load((ROOT / "docker/docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if "regtune" in service.get("image", "") and "command" in service:
            yield f"docker-compose.yml: {name}", service["command"]
    for path in sorted((ROOT / "docker/k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            pod = document.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                if container["image"].startswith("regtune:"):
                    command = container.get("command", ["regtune"])
                    assert command[0] == "regtune", f"{path.name}: {command}"
                    yield (
                        f"{path.name}: {container['name']}",
                        command[1:] + container.get("args", []),
                    )
    dockerfile = (ROOT / "docker/Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.MULTILINE)
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert entrypoint and cmd and json.loads(entrypoint.group(1)) == ["regtune"]
    yield "Dockerfile: CMD", json.loads(cmd.group(1))


def documented_variables() -> Iterator[tuple[str, str]]:
    for path in MARKDOWN + DEPLOYMENT:
        for name in VARIABLE.findall(path.read_text()):
            yield relative(path), name


def lone_flags() -> Iterator[tuple[str, str]]:
    """Flags named in a code span of their own (``--max-epochs``, ``--population P``)."""
    for path in MARKDOWN:
        for span in inline_code(path.read_text()):
            if span.startswith("--"):
                for flag in span.split()[0].split("/"):
                    yield relative(path), flag


# --- the checks ----------------------------------------------------------------------------


def test_every_documented_regtune_command_and_flag_exists() -> None:
    calls = list(documented_calls())
    assert len(calls) > 40  # the scan finds the docs' commands at all
    wrong = [
        f"{where}: regtune {' '.join(args)}: {p}"
        for where, args in calls
        for p in problems_of(args)
    ]
    assert wrong == []


def test_every_flag_named_alone_is_a_regtune_flag() -> None:
    wrong = [
        f"{where}: {flag}"
        for where, flag in lone_flags()
        if flag not in all_flags() | OTHER_TOOLS_FLAGS
    ]
    assert wrong == []


def test_the_images_compose_and_manifests_run_commands_the_cli_parses() -> None:
    calls = list(deployment_calls())
    assert {where.split(":")[0] for where in dict(calls)} >= {
        "docker-compose.yml",
        "api.yaml",
        "worker.yaml",
        "token-job.yaml",
        "Dockerfile",
    }
    for _, args in calls:
        parse_fully(args)


def test_every_documented_variable_is_a_setting_or_read_by_the_code() -> None:
    known = settings_variables() | variables_read_by_name() | compose_variables()
    named = list(documented_variables())
    assert len({name for _, name in named}) > 15
    assert sorted({f"{where}: {name}" for where, name in named if name not in known}) == []


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["serve", "--prot", "8000"], "regtune serve has no option '--prot'"),
        (["datasets", "uplod", "x.csv"], "no command 'regtune datasets uplod'"),
        (["token", "create", "NAME", "[--tenant", "T]"], None),
        (["compare", "$ID1", "$ID2", "[$ID3...]"], None),
    ],
)
def test_the_check_sees_a_wrong_name(args: list[str], problem: str | None) -> None:
    assert problems_of(args) == ([problem] if problem else [])


def test_the_scan_finds_calls_where_users_write_them() -> None:
    line = "ID2=$(regtune submit s.json) && kubectl -n regtune exec x -- regtune token create A"
    assert list(commands(line, "regtune")) == [["submit", "s.json"], ["token", "create", "A"]]
    assert list(commands(".venv/bin/regtune tune --json  # a comment", "regtune")) == [
        ["tune", "--json"]
    ]
    assert list(commands("pg_dump -U regtune regtune > regtune.sql", "regtune")) == []


def test_a_concrete_command_line_with_a_wrong_value_does_not_parse() -> None:
    with pytest.raises(Exception, match="valid integer"):
        parse_fully(["serve", "--port", "eighty"])
