"""Per-example statistics of a classifier's logits: the numbers behind link 2 of the chain.

The paper's claim is that quantized logits have lower variance across classes, which shrinks
margins and raises the loss. Per example: cross-entropy loss, correctness, the population
variance of the logits across classes, the confidence (max softmax probability) and the margin
(true-class logit minus the best other logit; negative when misclassified) — the
distance-to-boundary proxy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The per-example statistics, in report order.
STATISTICS = ("loss", "correct", "logit_variance", "confidence", "margin")


def logit_statistics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{statistic: (batch,) tensor}`` for ``logits`` of shape (batch, classes)."""
    logits = logits.detach()
    labels = labels.long()
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return {
        "loss": F.cross_entropy(logits, labels, reduction="none"),
        "correct": (logits.argmax(-1) == labels).to(logits.dtype),
        "logit_variance": logits.var(dim=-1, unbiased=False),
        "confidence": logits.softmax(-1).amax(-1),
        "margin": true - others.amax(-1),
    }
