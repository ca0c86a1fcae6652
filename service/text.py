"""How a value reads to a person, the same in the CLI's tables and in the HTML report."""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"


def value_text(value: Any) -> str:
    """A float to 4 significant digits, a list as ``[a, b]`` of its values' texts, None as a
    dash; everything else (ints, strings, booleans, infinities) as ``str`` writes it."""
    if value is None:
        return MISSING
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return str(value)
