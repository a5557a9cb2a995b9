"""Calibration data: input batches of a group-stratified sample, shared by every backend."""

from __future__ import annotations

from typing import Any

import torch

from ..batching import iterate_batches
from ..errors import FairQuantError
from ..groups import GroupSpec, as_group_spec, stratified_indices


def calibration_batches(
    model: torch.nn.Module,
    dataset: Any,
    size: int = 512,
    group_spec: GroupSpec | None = None,
    batch_size: int = 64,
    seed: int = 0,
    data_collator: Any = None,
    processing_class: Any = None,
) -> list[dict[str, torch.Tensor]]:
    """Input batches of a group-stratified subset of ``dataset`` (uniform if no groups), so that
    rare groups shape the activation ranges too. ``dataset`` is a ``datasets.Dataset`` (batched
    as the Trainer would: transforms, ``data_collator`` for dynamic padding, an image processor
    for PIL columns) or a :class:`~hf_fairquant.inputs.GroupedInputs` (its groups are used when
    ``group_spec`` is None). An empty ``dataset`` is an error (an uncalibrated model would keep
    scales of 1.0 and look quantized)."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise FairQuantError(f"calibration_size must be a positive integer, got {size!r}")
    grouped = hasattr(dataset, "input_batches") and hasattr(dataset, "codes")  # a GroupedInputs
    if grouped:
        codes = dataset.codes if group_spec is None else _fitted(group_spec, dataset.dataset).encode(dataset.dataset)
        subset = dataset.select(stratified_indices(codes, size, seed))
        return list(subset.input_batches(batch_size))
    if dataset is None or not hasattr(dataset, "select") or len(dataset) == 0:
        what = "None" if dataset is None else (f"empty ({type(dataset).__name__} of 0 rows)" if hasattr(dataset, "__len__") else type(dataset).__name__)
        raise FairQuantError(
            f"calibration_dataset is {what}: activation quantization needs a datasets.Dataset with at least one "
            "example of the model's inputs"
        )
    if group_spec is not None:
        rows = stratified_indices(_fitted(group_spec, dataset).encode(dataset), size, seed)
    else:
        rows = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    subset = dataset.select(rows.tolist() if hasattr(rows, "tolist") else rows)
    return list(iterate_batches(model, subset, batch_size, data_collator, processing_class))


def _fitted(group_spec: Any, dataset: Any) -> GroupSpec:
    spec = as_group_spec(group_spec, "calibration group_spec")
    return spec if spec.is_fitted else spec.fit(dataset)
