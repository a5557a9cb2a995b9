"""Group-weighted loss: static weights per group, or online Group-DRO weights.

Both turn per-example losses and group codes into one scalar for the batch. Static: the
weighted mean Σ w_g(i)·ℓ_i / Σ w_g(i) (as ``CrossEntropyLoss(weight=...)`` reduces). Group DRO
(Sagawa et al., 2020): weights q on the simplex move toward the groups with the highest loss,
q_g ← q_g·exp(η·L_g) / Σ, and the loss is Σ_g q_g·L_g over the groups present in the batch.
"""

from __future__ import annotations

from typing import Callable

import torch


class StaticGroupWeights:
    """Fixed per-group weights (e.g. inverse frequency, from ``GroupSpec.weights``)."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float32)

    def __call__(self, losses: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        w = self.weights.to(losses.device)[groups]
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

    def group_losses(self, losses: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss per group, count per group) in this batch; groups absent get 0."""
        n = len(self.q)
        sums = torch.zeros(n, dtype=losses.dtype, device=losses.device).index_add(0, groups, losses)
        counts = torch.bincount(groups, minlength=n).to(losses.dtype)
        return sums / counts.clamp(min=1), counts

    def __call__(self, losses: torch.Tensor, groups: torch.Tensor, update: bool = True) -> torch.Tensor:
        means, counts = self.group_losses(losses, groups)
        if update:
            self.step(losses.detach(), groups)
        q = self.q.to(device=losses.device, dtype=losses.dtype)
        present = (counts > 0).to(losses.dtype)
        return (q * present * means).sum() / (q * present).sum()

    @torch.no_grad()
    def step(self, losses: torch.Tensor, groups: torch.Tensor) -> None:
        """One exponentiated-gradient step with this batch's (all-process) group losses."""
        n = len(self.q)
        sums = torch.zeros(n, dtype=torch.float64).index_add(0, groups.cpu(), losses.cpu().double())
        counts = torch.bincount(groups.cpu(), minlength=n).double()
        if self.reduce is not None:
            sums, counts = self.reduce(sums), self.reduce(counts)
        present = counts > 0
        means = torch.where(present, sums / counts.clamp(min=1), torch.zeros_like(sums))
        self.q = self.q * torch.exp(self.step_size * means * present)
        self.q = self.q / self.q.sum()

    def state_dict(self) -> dict:
        return {"q": self.q.tolist(), "step_size": self.step_size}

    def load_state_dict(self, state: dict) -> None:
        q = torch.tensor(state["q"], dtype=torch.float64)
        if q.shape != self.q.shape:
            raise ValueError(f"DRO state has {len(q)} groups, the trainer has {len(self.q)}")
        self.q = q
