"""A tiny MLP classifier (≈200 parameters) small enough for exact Hessians, and its data."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Sequence, Value

FEATURES, HIDDEN, CLASSES = 8, 16, 3


class TinyClassifier(torch.nn.Module):
    """Linear → tanh → Linear; returns an object with ``.logits`` like transformers models."""

    def __init__(self, seed: int = 0, representable: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.hidden = torch.nn.Linear(FEATURES, HIDDEN)
        self.classifier = torch.nn.Linear(HIDDEN, CLASSES)
        if representable:  # int8 per-row absmax quantization reproduces these weights exactly
            with torch.no_grad():
                for layer in (self.hidden, self.classifier):
                    k = torch.randint(-127, 128, layer.weight.shape, generator=torch.Generator().manual_seed(seed))
                    k[:, 0] = 127
                    layer.weight.copy_(k.float() * 2.0**-7 / 4)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> SimpleNamespace:
        return SimpleNamespace(logits=self.classifier(torch.tanh(self.hidden(pixel_values))))


def tiny_data(n: int = 60, seed: int = 0, groups=("major", "major", "minor")) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)  # learnable, imbalanced
    features = Features(pixel_values=Sequence(Value("float32")), labels=Value("int64"), group=Value("string"))
    return Dataset.from_dict(
        {"pixel_values": x.tolist(), "labels": y, "group": [groups[i % len(groups)] for i in range(n)]},
        features=features,
    )


@pytest.fixture
def tiny_model() -> TinyClassifier:
    return TinyClassifier().eval()


@pytest.fixture(scope="module")
def data() -> Dataset:
    return tiny_data()


def flat_loss(model: torch.nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor):
    """The mean cross-entropy as a function of the named parameters, flattened (for exact Hessians)."""
    base = {n: p.detach() for n, p in model.named_parameters()}
    shapes = [base[n].shape for n in names]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params, start = dict(base), 0
        for n, shape in zip(names, shapes):
            size = int(np.prod(shape))
            params[n] = flat[start : start + size].view(shape)
            start += size
        logits = torch.func.functional_call(model, params, (x,)).logits
        return torch.nn.functional.cross_entropy(logits, y)

    return loss, torch.cat([base[n].reshape(-1) for n in names])


def group_tensors(dataset: Dataset, group: str) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [i for i, g in enumerate(dataset["group"][:]) if g == group]
    view = dataset.select(rows).with_format("torch")
    return view["pixel_values"][:], view["labels"][:]
