"""Tasks: how a model of one kind turns a batch into per-example outputs (one module each).

A :class:`Task` names the transformers class and ``pipeline`` tag it uses, reads references from
the data, and gives the per-example loss, predictions and scored units that the audit, explain,
curvature, allocation, the trainer and the metric adapter consume — so that none of them
computes a prediction or a loss itself. ``classification`` and ``causal-lm`` ship here; every
module of this package registers one task (:func:`register_task`), found on first use.
"""

from __future__ import annotations

from .base import (
    LOGIT_STATISTICS,
    MODALITIES,
    MetricNames,
    Task,
    TaskOutputs,
    float_logits,
    head_kind,
    is_quantized_tensor,
    modality_of,
)
from .registry import available_tasks, get_task, register_task, task_for_architecture, task_of

__all__ = [
    "LOGIT_STATISTICS", "MODALITIES", "MetricNames", "Task", "TaskOutputs", "available_tasks", "float_logits",
    "get_task", "head_kind", "is_quantized_tensor", "modality_of", "register_task", "task_for_architecture", "task_of",
]
