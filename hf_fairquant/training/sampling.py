"""Group-balanced sampling: example weights ∝ count(cell)^−power, drawn with replacement.

Cells are groups, classes, or group × class pairs. ``power`` 0 keeps natural frequencies, 1
makes every cell equally likely; in between, a cell's share is ∝ count^(1−power).

Under accelerate/DDP every rank builds the same sampler (same seed, same epoch), so all ranks
draw one global stream and accelerate's ``BatchSamplerShard`` hands each rank its own batches
of it: no batch position is served to two ranks, none is dropped. An example can still occur
twice in a step — that is what drawing with replacement means.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import FairQuantError
from .arguments import GROUP_SAMPLING


def cell_codes(mode: str, groups: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """The cell of each example for a sampling ``mode`` (see ``GROUP_SAMPLING``); ``labels`` may be
    None for ``group_balanced`` (a task without class labels)."""
    groups = np.asarray(groups, dtype=np.int64)
    if mode == "group_balanced":
        return groups
    if labels is None:
        raise FairQuantError(f"group_sampling {mode!r} needs class labels, and these data have none")
    labels = np.asarray(labels, dtype=np.int64)
    if mode == "class_balanced":
        return labels
    if mode == "group_class_balanced":
        return groups * (int(labels.max()) + 1) + labels
    raise FairQuantError(f"no cells for group_sampling {mode!r}; allowed: {list(GROUP_SAMPLING[1:])}")


def sampling_weights(cells: np.ndarray, power: float) -> np.ndarray:
    """Per-example probabilities: count(cell)^−power, normalised to sum to 1."""
    if not 0.0 <= power <= 1.0:
        raise FairQuantError(f"sampling_power must be in [0, 1], got {power}")
    _, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
    weights = counts[inverse].astype(np.float64) ** -power
    return weights / weights.sum()


def target_proportions(cells: np.ndarray, power: float) -> dict[int, float]:
    """Expected share of each cell in the sampled stream: ∝ count^(1−power)."""
    uniq, counts = np.unique(cells, return_counts=True)
    share = counts.astype(np.float64) ** (1.0 - power)
    return dict(zip(uniq.tolist(), (share / share.sum()).tolist()))


class GroupBalancedSampler(Sampler[int]):
    """Draw ``num_samples`` indices with replacement from fixed per-example probabilities.

    Seeded by ``seed + epoch`` (``set_epoch`` is called by the Trainer/accelerate each epoch),
    so a resumed run and every rank of a multi-process run see the same stream.
    """

    def __init__(self, probabilities: np.ndarray, num_samples: int | None = None, seed: int = 0) -> None:
        self.probabilities = torch.as_tensor(probabilities, dtype=torch.float64)
        self.num_samples = len(self.probabilities) if num_samples is None else int(num_samples)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        draws = torch.multinomial(self.probabilities, self.num_samples, replacement=True, generator=generator)
        return iter(draws.tolist())
