"""Which examples of each group the gradient and curvature estimates use (seeded, validated)."""

from __future__ import annotations

from ..errors import FairQuantError

from typing import Mapping, Union

import numpy as np

#: Default cap on examples per group for gradients and curvature (each HVP passes over them).
DEFAULT_MAX_EXAMPLES = 512

ExamplesPerGroup = Union[int, str, None]


def check_examples_per_group(value: ExamplesPerGroup) -> None:
    """``None`` (all, up to 512), ``"all"`` or a positive int."""
    if value is None or value == "all":
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise FairQuantError(
            f"examples_per_group must be a positive int, 'all', or None (all of a group's examples "
            f"up to {DEFAULT_MAX_EXAMPLES}); got {value!r}"
        )


def examples_to_use(counts: Mapping[str, int], value: ExamplesPerGroup) -> dict[str, int]:
    """``{group: examples}``; an int larger than a group's count is an error naming the group."""
    check_examples_per_group(value)
    if value is None:
        return {g: min(c, DEFAULT_MAX_EXAMPLES) for g, c in counts.items()}
    if value == "all":
        return dict(counts)
    short = {g: c for g, c in counts.items() if c < value}
    if short:
        listed = ", ".join(f"'{g}' has {c}" for g, c in short.items())
        raise FairQuantError(
            f"examples_per_group={value} but group(s) {listed} example(s) in the dataset; pass at most "
            f"{min(short.values())}, 'all' (every example of each group) or None (all up to {DEFAULT_MAX_EXAMPLES})"
        )
    return {g: int(value) for g in counts}


def sample_rows(codes: np.ndarray, code: int, size: int, seed: int) -> np.ndarray:
    """``size`` row indices of group ``code``, drawn without replacement, in row order."""
    rows = np.flatnonzero(np.asarray(codes) == code)
    rng = np.random.default_rng([seed, code])
    return np.sort(rng.permutation(rows)[:size])
