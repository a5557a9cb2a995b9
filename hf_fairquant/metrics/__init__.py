"""Group metrics: the ``group_disparity`` evaluate module and helpers around it."""

from ._loading import (
    GROUP_DISPARITY,
    METRIC_REPO_ENV,
    load_group_disparity,
    metric_load_snippet,
    metric_repo,
)
from ._trainer import group_compute_metrics

__all__ = [
    "GROUP_DISPARITY", "METRIC_REPO_ENV", "group_compute_metrics", "load_group_disparity", "metric_load_snippet",
    "metric_repo",
]
