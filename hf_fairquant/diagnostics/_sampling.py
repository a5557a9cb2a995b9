"""Which examples of each group the gradient and curvature estimates use (seeded, validated)."""

from __future__ import annotations

from typing import Mapping, Union

import numpy as np

from ..errors import FairQuantError

#: Default cap on examples per group for gradients and curvature (each HVP passes over them).
DEFAULT_MAX_EXAMPLES = 128

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


def examples_to_use(counts: Mapping[str, int], value: ExamplesPerGroup) -> dict[str, int]:
    """``{group: examples}``; an int larger than a group's count is an error naming the group.

    ``None`` gives every group the same count (the smallest group's, at most
    ``DEFAULT_MAX_EXAMPLES``): ‖∇L‖ and λ_max of a mean over n examples grow as n shrinks
    (sampling noise), so groups are compared at equal n unless the caller asks otherwise.
    """
    check_examples_per_group(value)
    if value is None:
        equal = min(min(counts.values()), DEFAULT_MAX_EXAMPLES)
        return {g: equal for g in counts}
    if value == "all":
        return dict(counts)
    short = {g: c for g, c in counts.items() if c < value}
    if short:
        listed = ", ".join(f"'{g}' has {c}" for g, c in short.items())
        raise FairQuantError(
            f"examples_per_group={value} but group(s) {listed} example(s) in the dataset; pass at most "
            f"{min(short.values())}, 'all' (every example of each group) or None (equal counts, up to {DEFAULT_MAX_EXAMPLES})"
        )
    return {g: int(value) for g in counts}


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
