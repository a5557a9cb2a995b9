"""Calibration data: input batches of a group-stratified sample, shared by every backend."""

from __future__ import annotations

from typing import Any

import torch

from ..batching import iterate_batches
from ..groups import GroupSpec, stratified_indices


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
    rare groups shape the activation ranges too. Batches come from the one input layer
    (:class:`~hf_fairquant.batching.ModelInputs`: transforms, ``data_collator`` for dynamic
    padding, an image processor for PIL columns)."""
    if group_spec is not None:
        spec = group_spec if group_spec.is_fitted else group_spec.fit(dataset)
        rows = stratified_indices(spec.encode(dataset), size, seed)
    else:
        rows = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    subset = dataset.select(rows.tolist() if hasattr(rows, "tolist") else rows)
    batches = iterate_batches(model, subset, batch_size, False, data_collator, processing_class)
    return [inputs for inputs, _ in batches]
