"""Load the ``group_disparity`` evaluate module once per process."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import evaluate

#: Path of the self-contained ``evaluate`` module; use ``evaluate.load(GROUP_DISPARITY)``.
GROUP_DISPARITY: str = str(Path(__file__).parent / "group_disparity")


@functools.lru_cache(maxsize=1)
def load_group_disparity() -> "evaluate.EvaluationModule":
    """The loaded module, cached; in memory so concurrent evaluations share no cache file."""
    import evaluate

    return evaluate.load(GROUP_DISPARITY, keep_in_memory=True)
