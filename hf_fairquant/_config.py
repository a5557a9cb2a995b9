"""Stage configs: one small dataclass per stage, shared by the Python API, YAML and the CLI.

A function that takes ``config=`` also takes any of the config's fields as keywords
(``audit(..., n_boot=200)``); :func:`resolve_config` merges the two — a keyword wins over the
config it is given with, and an unknown keyword is an error naming the allowed ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from .errors import FairQuantError

C = TypeVar("C")


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def resolve_config(cls: type[C], config: C | None, options: dict[str, Any], where: str) -> C:
    """``config`` (default: ``cls()``) with ``options`` (keyword arguments of ``where``) applied."""
    if config is None:
        config = cls()
    elif not isinstance(config, cls):
        raise FairQuantError(f"{where}(config=...) takes a {cls.__name__}, got {type(config).__name__}")
    unknown = sorted(set(options) - set(field_names(cls)))
    if unknown:
        raise FairQuantError(f"{where}() got unknown option(s) {unknown}; allowed: {sorted(field_names(cls))}")
    return dataclasses.replace(config, **options) if options else config


def check_positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    """``value`` is an int (not a bool) ≥ 1 (≥ 0 with ``allow_zero``), else a FairQuantError."""
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise FairQuantError(f"{name} must be an integer ≥ {low}, got {value!r}")


#: The most bootstrap resamples a stage takes: percentile intervals settle by a few thousand, and
#: the metric draws an (n_boot × groups × 4) count array, so 10⁹ would need tens of GB after the FP pass.
MAX_N_BOOT = 100_000


def check_n_boot(name: str, value: Any) -> None:
    """``value`` is an int in ``0..MAX_N_BOOT`` (0: no intervals), else a FairQuantError — before any work."""
    check_positive_int(name, value, allow_zero=True)
    if value > MAX_N_BOOT:
        raise FairQuantError(
            f"{name} must be at most {MAX_N_BOOT:,} bootstrap resamples (1,000–10,000 give stable 95 % intervals; "
            f"memory grows with n_boot × groups), got {value:,}"
        )


def check_positive_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise FairQuantError(f"{name} must be a number > 0, got {value!r}")


def split_commas(values: Any) -> list:
    """``["a,b", "c"]`` or ``"a,b"`` → ``["a", "b", "c"]`` (the CLI's comma lists); other items kept.
    A comma inside brackets does not split (``Config:skip=[a,b]`` stays one item)."""
    if isinstance(values, str):
        values = [values]
    out: list = []
    for v in values or []:
        out.extend(p.strip() for p in _top_level_split(v) if p.strip()) if isinstance(v, str) else out.append(v)
    return out


def _top_level_split(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts
