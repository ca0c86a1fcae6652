"""The code in the project's Markdown, as a reader meets it: blocks to copy, spans in the prose.

Read with markdown-it-py (CommonMark), so that what counts as a block here is what GitHub
shows as one. A block that the README test does not run is preceded by an HTML comment
``<!-- not run: why -->``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from markdown_it import MarkdownIt

NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->", re.DOTALL)
# A block that is a file to write names it on its first line: "# my-networks/pyproject.toml".
FILE_COMMENT = re.compile(r"#\s*([\w.-]+(?:/[\w.-]+)*\.\w+)\s*")
# Shell operators after which a new command starts (spaced out before splitting: "$(regtune").
OPERATORS = re.compile(r"(\$\(|\(|\)|\|\||\||&&|;|`)")


@dataclass(frozen=True)
class Block:
    info: str  # the fence's language ("" for an indented block)
    text: str
    line: int  # 1-based line of the block's first line in its file
    not_run: str | None  # why the README test does not run it, if it says so

    @property
    def file(self) -> str | None:
        """The path the block is the content of, when its first line names one."""
        first = self.text.split("\n", 1)[0]
        match = FILE_COMMENT.fullmatch(first)
        return match.group(1) if match else None


def parse(markdown: str) -> list[Any]:
    return MarkdownIt("commonmark").parse(markdown)


def blocks(markdown: str) -> list[Block]:
    """Every code block, fenced or indented, in order."""
    found: list[Block] = []
    reason: str | None = None
    for token in parse(markdown):
        if token.type == "html_block" and (match := NOT_RUN.search(token.content)):
            reason = match.group(1)
            continue
        if token.type in ("fence", "code_block"):
            info = token.info.split()[0] if token.info.strip() else ""
            line = token.map[0] + (2 if token.type == "fence" else 1)
            found.append(Block(info, token.content, line, reason))
        reason = None  # a "not run" comment speaks for the block right after it only
    return found


def inline_code(markdown: str) -> list[str]:
    """The text of every inline code span of the prose."""
    return [
        child.content
        for token in parse(markdown)
        if token.type == "inline"
        for child in token.children or []
        if child.type == "code_inline"
    ]


def shell_lines(text: str) -> Iterator[str]:
    """A shell text's logical lines: continuations (a trailing backslash) joined."""
    yield from re.sub(r"\\\n", " ", text).splitlines()


def words(line: str) -> list[str]:
    """A shell line's words, its operators as words of their own, comments dropped."""
    spaced = OPERATORS.sub(r" \1 ", line)
    try:
        return shlex.split(spaced, comments=True)
    except ValueError:  # an unbalanced quote: prose or a heredoc's content, not a command
        return spaced.split("#", 1)[0].split()


def commands(line: str, program: str) -> Iterator[list[str]]:
    """The arguments of each call of ``program`` on a shell line (``VAR=x program ...``,
    ``$(program ...)``, ``.venv/bin/program``, ``... -- program ...`` included)."""
    parts = words(line)
    start = True
    for i, word in enumerate(parts):
        if start and re.fullmatch(r"\w+=.*", word):
            continue  # an assignment before the command
        if (start or parts[i - 1] == "--") and word.rsplit("/", 1)[-1] == program:
            rest = parts[i + 1 :]
            ends = [j for j, w in enumerate(rest) if OPERATORS.fullmatch(w)]
            yield rest[: ends[0]] if ends else rest
        start = bool(OPERATORS.fullmatch(word))
