"""matplotlib figures as inline SVG: no script, no file, stable element ids."""

from __future__ import annotations

import io
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

log = logging.getLogger("regtune.report")


# matplotlib's pyplot-free API is used, but rcParams and font caches are process-wide.
_matplotlib_lock = threading.Lock()
_RC: dict[str, Any] = {
    "svg.fonttype": "path",  # glyphs as paths: no font files, no font names to resolve
    "svg.hashsalt": "regtune-report",  # stable element ids, so the same study renders the same
    "svg.image_inline": True,  # a rasterized scatter becomes a data: URI, never a file
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100,
}


# --- SVG from matplotlib ----------------------------------------------------------------------

_XML_DECLARATION = re.compile(r"<\?xml[^>]*\?>\s*")
_DOCTYPE = re.compile(r"<!DOCTYPE[^>]*>\s*", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->\s*", re.DOTALL)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_ID = re.compile(r'\bid="([^"]+)"')


def inline_svg(figure: Any, prefix: str) -> str:
    """The figure as an ``<svg>`` element for an HTML page.

    Dropped: the XML declaration and DOCTYPE (which name w3.org), metadata, comments (which
    repeat each label's text) and the namespace declarations, which HTML's parser does not
    need. Element ids get ``prefix`` so that several plots on one page cannot collide, and
    ``xlink:href`` becomes SVG 2's plain ``href``.
    """
    buffer = io.StringIO()
    figure.savefig(
        buffer,
        format="svg",
        bbox_inches="tight",
        metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
    )
    svg = buffer.getvalue()
    for pattern in (_XML_DECLARATION, _DOCTYPE, _COMMENT, _METADATA, _XMLNS):
        svg = pattern.sub("", svg)
    ids = set(_ID.findall(svg))
    svg = svg.replace("xlink:href=", "href=")

    def renamed(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"{match.group(1)}{prefix}-{name}" if name in ids else match.group(0)

    seen: Counter[str] = Counter()

    def declared(match: re.Match[str]) -> str:
        # matplotlib names equal images alike: a repeat gets a suffix (references reach the first).
        name = match.group(2)
        seen[name] += 1
        suffix = f"-{seen[name]}" if seen[name] > 1 else ""
        return f"{match.group(1)}{prefix}-{name}{suffix}"

    svg = re.sub(r'(\bid=")([^"]+)', declared, svg)
    svg = re.sub(r'(\bhref="#)([^"]+)', renamed, svg)
    svg = re.sub(r"(url\(#)([^)]+)", renamed, svg)
    # Shrinks with a narrow page (CSS max-width); the viewBox keeps the proportions.
    svg = svg.replace("<svg ", '<svg class="plot" role="img" ', 1)
    return svg.strip()


def plot(prefix: str, draw: Callable[[Any], None], size: tuple[float, float]) -> str:
    """Draw on a fresh matplotlib Figure (no pyplot state) and inline it as SVG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    with _matplotlib_lock, matplotlib.rc_context(_RC):  # type: ignore[arg-type]  # str keys
        figure = Figure(figsize=size, layout="constrained")
        draw(figure)
        return inline_svg(figure, prefix)
