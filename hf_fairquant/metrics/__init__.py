"""Group metrics: the ``group_disparity`` evaluate module and helpers around it."""

from pathlib import Path

#: Path of the self-contained ``evaluate`` module; use ``evaluate.load(GROUP_DISPARITY)``.
GROUP_DISPARITY: str = str(Path(__file__).parent / "group_disparity")

__all__ = ["GROUP_DISPARITY"]
