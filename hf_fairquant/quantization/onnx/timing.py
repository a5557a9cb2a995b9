"""Throughput of a model over fixed input batches — torch and ONNX Runtime measured alike, so a
ratio of two calls made side by side in one process is a speed-up (never a timed test)."""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import torch


@torch.no_grad()
def throughput(model: torch.nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], repeats: int = 3) -> float:
    """Examples per second: one warm-up pass over ``batches``, then the best of ``repeats`` passes."""
    model.eval()
    examples = sum(len(next(iter(b.values()))) for b in batches)
    for b in batches:
        model(**b)
    best = float("inf")
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        for b in batches:
            model(**b)
        best = min(best, time.perf_counter() - start)
    return examples / best
