"""Small shared formatting: percentages, intervals, Markdown tables, plain-JSON conversion."""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any, Sequence


def pct(value: float | None, ci: Sequence[float] | None = None) -> str:
    """A fraction as a percentage with one decimal (``0.873`` → ``"87.3"``), plus ``[lo, hi]``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{100 * value:.1f}"
    return text + (f" {ci_text(ci)}" if ci is not None else "")


def signed_pct(value: float | None) -> str:
    """Percentage points with a sign; a rounded −0.0 prints as +0.0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{round(100 * value, 1) + 0.0:+.1f}"


def ci_text(interval: Sequence[float] | None, missing: str = "not bootstrapped") -> str:
    """``[lo, hi]`` in percent, or ``missing``."""
    return f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else missing


def escape_cell(value: Any) -> str:
    """Text safe inside a Markdown table cell (a ``|`` in a group name would split the row)."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(head: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; every cell escaped."""
    lines = ["| " + " | ".join(escape_cell(c) for c in head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(escape_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_plain(obj: Any) -> Any:
    """JSON types only: dicts with str keys, lists, finite floats (NaN/inf → None), ints, str, bool,
    None; numpy/torch scalars and arrays become Python values, paths strings."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch arrays and scalars
        return to_plain(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return to_plain(obj.item())
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_plain(obj.to_dict())
    return str(obj)
