"""Group metrics: the ``group_disparity`` evaluate module and helpers around it."""

from ._loading import GROUP_DISPARITY, load_group_disparity
from ._trainer import group_compute_metrics

__all__ = ["GROUP_DISPARITY", "group_compute_metrics", "load_group_disparity"]
