"""Group-weighted loss: static weights per group, or online Group-DRO weights.

Both turn per-example losses and group codes into one scalar for the batch. Static: the
weighted mean Σ w_g(i)·ℓ_i / Σ w_g(i) (as ``CrossEntropyLoss(weight=...)`` reduces). Group DRO
(Sagawa et al., 2020): weights q on the simplex move toward the groups with the highest loss,
q_g ← q_g·exp(η·L_g) / Σ, and the loss is Σ_g q_g·L_g over the groups present in the batch.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import FairQuantError


class StaticGroupWeights:
    """Fixed per-group weights (e.g. inverse frequency, from ``GroupSpec.weights``)."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float32)

    def __call__(self, losses: torch.Tensor, groups: torch.Tensor, units: torch.Tensor | None = None) -> torch.Tensor:
        """``units`` (e.g. scored tokens per example): each example also weighs by them."""
        w = self.weights.to(losses.device)[groups]
        if units is not None:
            w = w * units.to(w.dtype)
        return (w * losses).sum() / w.sum()


class GroupDROWeights:
    """Online Group-DRO weights; ``state_dict`` / ``load_state_dict`` for checkpoints.

    ``reduce`` sums tensors over processes (accelerate's ``reduce(..., "sum")``) so that every
    rank sees the same group losses and keeps identical weights.
    """

    def __init__(
        self,
        num_groups: int,
        step_size: float = 0.01,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.q = torch.full((num_groups,), 1.0 / num_groups, dtype=torch.float64)
        self.step_size = step_size
        self.reduce = reduce

    def __call__(
        self, losses: torch.Tensor, groups: torch.Tensor, units: torch.Tensor | None = None, update: bool = True
    ) -> torch.Tensor:
        """``units`` (e.g. scored tokens per example): a group's loss is the units-weighted mean."""
        n = len(self.q)
        if units is None:
            counts = torch.bincount(groups, minlength=n).to(losses.dtype)
            means = losses.new_zeros(n).index_add_(0, groups, losses) / counts.clamp(min=1)  # absent groups: 0
        else:
            units = units.to(losses.dtype)
            counts = losses.new_zeros(n).index_add_(0, groups, units)
            means = losses.new_zeros(n).index_add_(0, groups, losses * units) / counts.clamp(min=1e-12)
        if update:
            self.step(means.detach(), counts)
        weights = self.q.to(device=losses.device, dtype=losses.dtype) * (counts > 0)
        return (weights * means).sum() / weights.sum()

    @torch.no_grad()
    def step(self, means: torch.Tensor, counts: torch.Tensor) -> None:
        """One exponentiated-gradient step from this batch's per-group mean losses (0 for absent
        groups, which leaves their weight unchanged before normalisation). With ``reduce`` set,
        the means are first combined over processes, weighted by their counts."""
        means = means.cpu().double()
        if self.reduce is not None:
            counts = counts.cpu().double()
            total = self.reduce(counts)
            means = self.reduce(means * counts) / total.clamp(min=1)
        self.q = self.q * torch.exp(self.step_size * means)
        self.q = self.q / self.q.sum()

    def state_dict(self) -> dict:
        return {"q": self.q.tolist(), "step_size": self.step_size}

    def load_state_dict(self, state: dict) -> None:
        q = torch.tensor(state["q"], dtype=torch.float64)
        if q.shape != self.q.shape:
            raise FairQuantError(f"DRO state has {len(q)} groups, the trainer has {len(self.q)}")
        self.q = q
