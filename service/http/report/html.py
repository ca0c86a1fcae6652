"""HTML pieces of the report: escaping, numbers as text, tables, sections, its CSS."""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

from service.text import value_text

log = logging.getLogger("regtune.report")


# --- small formatting helpers -----------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def shown(value: Any) -> str:
    """A value as the report shows it: its text (``service.text``), escaped."""
    return esc(value_text(value))


def percent(fraction: Any) -> str:
    return f"{100 * float(fraction):.3g} %" if isinstance(fraction, int | float) else "part"


def floats(values: Sequence[Any]) -> list[float]:
    """A stored curve as numbers: a missing (None) or non-numeric point becomes NaN, a gap."""
    out = []
    for value in values:
        try:
            out.append(float(value))
        except (TypeError, ValueError):
            out.append(math.nan)
    return out


def table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table from cells that are already HTML (escape before passing them in)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def para(text: str) -> str:
    return f"<p>{text}</p>"


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:72rem;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{padding:.2rem .7rem;text-align:left;
border-bottom:1px solid #eee;vertical-align:top}thead th{border-bottom:2px solid #ccc}
code{background:#f4f4f4;padding:0 .2rem;border-radius:3px}
.note{background:#fff6dd;border-left:4px solid #e0a030;padding:.5rem .8rem}
.empty{background:#fdecea;border-left:4px solid #c0392b;padding:.5rem .8rem}
svg.plot{max-width:100%;height:auto;display:block;margin:.5rem 0}
footer{margin-top:3rem;color:#777;font-size:.85rem}
"""
