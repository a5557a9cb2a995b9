"""Batches of model inputs from a preprocessed ``datasets.Dataset`` (one job: slicing)."""

from __future__ import annotations

import inspect
from typing import Any, Iterator

import torch

LABELS = "labels"


def model_input_names(model: torch.nn.Module, dataset: Any) -> list[str]:
    """Dataset columns the model's ``forward`` accepts, minus ``labels`` (as the Trainer does)."""
    params = set(inspect.signature(model.forward).parameters)
    names = [c for c in dataset.column_names if c in params and c != LABELS]
    if not names:
        raise ValueError(
            f"no column of the dataset is an input of {type(model).__name__}.forward; "
            f"columns: {dataset.column_names}, forward takes: {sorted(params)}"
        )
    return names


def iterate_batches(
    model: torch.nn.Module, dataset: Any, batch_size: int = 256, with_labels: bool = True
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor | None]]:
    """Yield ``(inputs, labels)`` tensor batches in row order (no shuffling, no padding)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    inputs = model_input_names(model, dataset)
    columns = inputs + ([LABELS] if with_labels else [])
    view = dataset.with_format("torch", columns=columns)
    for start in range(0, len(view), batch_size):
        batch = view[start : start + batch_size]
        yield {k: batch[k] for k in inputs}, (batch[LABELS] if with_labels else None)
