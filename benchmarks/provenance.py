"""Where a benchmark figure comes from (command, machine, commit), how it reads (markdown), and
where it goes."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {os.cpu_count()} cores ({usable} usable), Python {platform.python_version()}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s), "
        f"Optuna {optuna.__version__}"
    )


def git_commit() -> str:
    """The commit measured: git's short hash (marked when the tree has changes), else
    ``REGTUNE_COMMIT`` from the environment (the device machine has a copy of the tree but
    maybe no git, and no .git), else "unknown"."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
            )
        except OSError:  # no git on this machine: a benchmark's figures still count
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or os.environ.get("REGTUNE_COMMIT", "unknown")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit} (uncommitted changes in the working tree)" if dirty else commit


def command_line() -> str:
    python = Path(sys.executable)
    try:
        shown = str(python.relative_to(Path.cwd())) if python.is_absolute() else str(python)
    except ValueError:
        shown = "python"
    return shlex.join([shown, *sys.argv])


# BENCHMARKS.md opens with the latest figure of each workload (kept by hand), then the history
# of every run as recorded, oldest first: a new run goes at the end, into the history.
NEW_LOG = """# Benchmarks

The latest figure for each workload, then the history: every run as recorded, oldest first.

## Latest figures

None yet: copy a run's figure here from the history, with its command, machine and commit.

## History
"""


def append_section(path: Path, text: str) -> None:
    """Add a run's section at the end of the log's history (a new log is started first)."""
    if not path.exists():
        path.write_text(NEW_LOG)
    with path.open("a") as handle:
        handle.write("\n" + text)


def markdown_table(
    header: Sequence[str], align: str, rows: Iterable[Sequence[object]]
) -> list[str]:
    """A markdown table's lines; ``align`` has a letter per column: ``l`` text, ``r`` numbers."""
    if len(align) != len(header):
        raise ValueError(f"{len(header)} columns but {len(align)} alignments ({align!r})")
    rule = "|".join({"l": "---", "r": "---:"}[a] for a in align)
    lines = [f"| {' | '.join(header)} |", f"|{rule}|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells under {len(header)} columns: {row}")
        lines.append(f"| {' | '.join(map(str, row))} |")
    return lines


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring's first line as the description, and
    ``--append FILE`` (see :func:`publish`)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--append", type=Path, help="append the markdown section to this file")
    return parser


def publish(lines: list[str], append: Path | None) -> None:
    """Print a benchmark's markdown section and, with ``--append FILE``, add it to FILE."""
    text = "\n".join([*lines, ""])
    print(text)
    if append:
        append_section(append, text)
