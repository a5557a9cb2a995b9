"""Which examples of each group the gradient and curvature estimates use (seeded, validated)."""

from __future__ import annotations

from typing import Mapping, Union

import numpy as np

from ..errors import FairQuantError

#: Default cap on examples per group for gradients and curvature (each HVP passes over them).
DEFAULT_MAX_EXAMPLES = 128
#: The same cap for a task that scores tokens (a causal LM): tokens per group.
DEFAULT_MAX_TOKENS = 4096

ExamplesPerGroup = Union[int, str, None]


def check_examples_per_group(value: ExamplesPerGroup) -> None:
    """``None`` (equal counts: the smallest group's, up to the cap), ``"all"`` or a positive int."""
    if value is None or value == "all":
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise FairQuantError(
            f"examples_per_group must be a positive int, 'all', or None (every group at the smallest "
            f"group's count, up to {DEFAULT_MAX_EXAMPLES}); got {value!r}"
        )


def examples_to_use(counts: Mapping[str, int], value: ExamplesPerGroup, unit: str = "example") -> dict[str, int]:
    """``{group: examples}``; an int larger than a group's count is an error naming the group.

    ``None`` gives every group the same count (the smallest group's, at most
    ``DEFAULT_MAX_EXAMPLES``): ‖∇L‖ and λ_max of a mean over n examples grow as n shrinks
    (sampling noise), so groups are compared at equal n unless the caller asks otherwise.
    ``unit="token"`` (a task that scores tokens): counts and ``value`` are scored tokens, the cap
    ``DEFAULT_MAX_TOKENS``.
    """
    check_examples_per_group(value)
    cap = DEFAULT_MAX_EXAMPLES if unit == "example" else DEFAULT_MAX_TOKENS
    if value is None:
        equal = min(min(counts.values()), cap)
        return {g: equal for g in counts}
    if value == "all":
        return dict(counts)
    short = {g: c for g, c in counts.items() if c < value}
    if short:
        listed = ", ".join(f"'{g}' has {c}" for g, c in short.items())
        what = "example(s) in the dataset" if unit == "example" else f"scored {unit}(s) in the dataset (examples_per_group counts {unit}s for this task)"
        raise FairQuantError(
            f"examples_per_group={value} but group(s) {listed} {what}; pass at most "
            f"{min(short.values())}, 'all' (every example of each group) or None (equal counts, up to {cap})"
        )
    return {g: int(value) for g in counts}


def sample_rows_by_units(
    codes: np.ndarray, code: int, units: np.ndarray, budget: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of group ``code`` holding exactly ``budget`` scored units (tokens): the group's rows
    in a seeded random order (the order :func:`sample_rows` draws), taken until their units
    reach the budget; the last one keeps only the units still needed. Returns the rows in row
    order and how many of each row's units to score."""
    rows = np.flatnonzero(np.asarray(codes) == code)
    rng = np.random.default_rng([seed, code])
    order = rng.permutation(rows)
    cumulative = np.cumsum(units[order])
    take = int(np.searchsorted(cumulative, budget)) + 1
    chosen = order[:take]
    keep = units[chosen].copy()
    keep[-1] -= int(cumulative[take - 1]) - int(budget)
    by_row = np.argsort(chosen)
    return chosen[by_row], keep[by_row]


def sample_rows(codes: np.ndarray, code: int, size: int, seed: int) -> np.ndarray:
    """``size`` row indices of group ``code``, drawn without replacement, in row order."""
    rows = np.flatnonzero(np.asarray(codes) == code)
    rng = np.random.default_rng([seed, code])
    return np.sort(rng.permutation(rows)[:size])


def split_halves(rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``rows`` into two halves (sizes differ by at most one), each in
    row order: the split-half estimate of a group's gradient sampling noise uses them."""
    order = np.random.default_rng([seed, len(rows), 7]).permutation(len(rows))
    half = len(rows) // 2
    return np.sort(rows[order[:half]]), np.sort(rows[order[half:]])
