"""Batches of model inputs from a preprocessed ``datasets.Dataset``, and the one forward pass
every evaluation shares (predictions and per-example loss)."""

from __future__ import annotations

from .errors import FairQuantError

import inspect
import sys
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

LABELS = "labels"


def model_input_names(model: torch.nn.Module, dataset: Any) -> list[str]:
    """Dataset columns the model's ``forward`` accepts, minus ``labels`` (as the Trainer does)."""
    params = set(inspect.signature(model.forward).parameters)
    names = [c for c in dataset.column_names if c in params and c != LABELS]
    if not names:
        raise FairQuantError(
            f"no column of the dataset is an input of {type(model).__name__}.forward; "
            f"columns: {dataset.column_names}, forward takes: {sorted(params)}"
        )
    return names


def iterate_batches(
    model: torch.nn.Module, dataset: Any, batch_size: int = 256, with_labels: bool = True
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor | None]]:
    """Yield ``(inputs, labels)`` tensor batches in row order (no shuffling, no padding), on the
    device of the model's parameters."""
    if batch_size <= 0:
        raise FairQuantError(f"batch_size must be positive, got {batch_size}")
    inputs = model_input_names(model, dataset)
    columns = inputs + ([LABELS] if with_labels else [])
    view = dataset.with_format("torch", columns=columns)
    device = model_device(model)
    move = (lambda t: t) if device.type == "cpu" else (lambda t: t.to(device))  # noqa: E731
    for start in range(0, len(view), batch_size):
        batch = view[start : start + batch_size]
        yield {k: move(batch[k]) for k in inputs}, (move(batch[LABELS]) if with_labels else None)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def float_logits(output: Any) -> torch.Tensor:
    """``output.logits`` (or the tensor itself) as a float tensor; quanto's quantized activations
    are dequantized (differentiably)."""
    logits = getattr(output, "logits", output)
    if "optimum.quanto" in sys.modules:  # a QTensor exists only once quanto is loaded
        from optimum.quanto import QTensor

        if isinstance(logits, QTensor):
            logits = logits.dequantize()
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


@torch.no_grad()
def predict_batches(
    model: torch.nn.Module, batches: Iterable[tuple[dict[str, torch.Tensor], torch.Tensor]]
) -> tuple[np.ndarray, np.ndarray]:
    """One pass over ``(inputs, labels)`` batches: (predicted class, per-example cross-entropy)."""
    preds, losses = [], []
    for inputs, labels in batches:
        logits = float_logits(model(**inputs))
        preds.append(logits.argmax(-1))
        losses.append(F.cross_entropy(logits, labels, reduction="none"))
    return torch.cat(preds).cpu().numpy(), torch.cat(losses).cpu().numpy()
