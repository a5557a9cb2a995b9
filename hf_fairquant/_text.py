"""Small text helpers shared by every Markdown writer (report, card, audit, explain)."""

from __future__ import annotations

from typing import Any


def md_cell(value: Any) -> str:
    """``value`` as one Markdown table cell: ``|`` escaped (a group named ``a|b`` would
    otherwise split the row) and newlines flattened."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def md_row(cells: Any) -> str:
    """One Markdown table row of escaped cells."""
    return "| " + " | ".join(md_cell(c) for c in cells) + " |"
