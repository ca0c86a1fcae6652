"""BENCHMARKS.md reads from the top: a table of the latest figures whose links reach their runs
in the history below it, and the benchmark scripts add each new run at the end of that history.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import append_section  # noqa: E402


def anchors(markdown: str) -> set[str]:
    """The headings' link targets as GitHub makes them: lower case, punctuation dropped,
    spaces as hyphens, a repeated heading numbered -1, -2, ..."""
    seen: Counter[str] = Counter()
    found = set()
    for line in markdown.splitlines():
        if heading := re.match(r"#+ (.*)", line):
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            found.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
            seen[slug] += 1
    return found


def links(markdown: str) -> list[str]:
    return re.findall(r"\]\(#([^)\s]+)\)", markdown)


def test_each_latest_figure_links_to_its_run_in_the_history() -> None:
    text = (ROOT / "BENCHMARKS.md").read_text()
    latest, history = text.split("\n## Latest figures\n")[1].split("\n## History\n")
    rows = [line for line in latest.splitlines() if line.startswith("| ")][1:]  # no header
    assert len(rows) >= 10
    for row in rows:
        assert links(row), f"a latest figure without its section: {row[:80]}"
    assert set(links(latest)) <= anchors(history), set(links(latest)) - anchors(history)


def test_a_new_run_is_appended_to_the_history(tmp_path: Path) -> None:
    log = tmp_path / "BENCHMARKS.md"
    shutil.copy(ROOT / "BENCHMARKS.md", log)
    before = log.read_text()
    append_section(log, "## Engines: a new run\n\n| a |\n|---|\n")
    after = log.read_text()
    assert after.startswith(before)  # the table on top and the history are untouched
    assert after.index("## History") < after.index("## Engines: a new run")

    fresh = tmp_path / "fresh.md"
    append_section(fresh, "## Engines: a first run\n")
    text = fresh.read_text()
    assert text.index("## Latest figures") < text.index("## History") < text.index("a first run")
