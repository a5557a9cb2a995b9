"""One pass over the data with the FP and the quantized model side by side, batch by batch.

Each batch goes through both models (the same inputs); forward hooks record every quantized
module's output in both, their per-example squared difference and norm are kept, and so are
the per-example logit statistics of both models. Only per-example numbers are stored, never
activations, so memory does not grow with the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..curvature import evaluating
from ..inputs import GroupedInputs
from ..tasks import LOGIT_STATISTICS
from ._drift import ActivationRecorder, per_example_sq


@dataclass
class PairedPass:
    """Per-example arrays: logit statistics of each model, and per layer (columns, in
    ``layers`` order) the squared activation drift ‖a_q − a‖² and the squared FP norm ‖a‖²."""

    layers: list[str]
    fp: dict[str, np.ndarray]
    quantized: dict[str, np.ndarray]
    drift_sq: np.ndarray
    norm_sq: np.ndarray
    #: scored units (tokens for a causal LM) of every example: the weights of its means
    units: np.ndarray | None = None


@torch.no_grad()
def paired_pass(
    fp: torch.nn.Module,
    quantized: torch.nn.Module,
    inputs: GroupedInputs,
    layers: Sequence[str],
    batch_size: int = 128,
    progress: bool = True,
) -> PairedPass:
    """Run every row of ``inputs`` through both models once (see the module docstring); the task
    of ``inputs`` gives the per-example logit statistics."""
    stats: dict[str, dict[str, list]] = {"fp": {k: [] for k in LOGIT_STATISTICS}, "quantized": {k: [] for k in LOGIT_STATISTICS}}
    drift, norm, units = [], [], []
    by_token = inputs.task.unit_name != "example"  # padded positions carry no drift (a causal LM)
    total = -(-len(inputs) // batch_size)
    with evaluating(fp), evaluating(quantized), ActivationRecorder(fp, layers) as fp_rec, ActivationRecorder(quantized, layers) as q_rec:
        for batch, targets in tqdm(inputs.batches(batch_size), total=total, desc="FP vs quantized", disable=not progress, leave=False):
            fp_rec.outputs.clear()
            q_rec.outputs.clear()
            for key, model in (("fp", fp), ("quantized", quantized)):
                for stat, values in inputs.task.logit_statistics(model(**batch), targets).items():
                    stats[key][stat].append(values.double().cpu().numpy())
            n = len(stats["fp"]["loss"][-1])
            units.append(inputs.task.units(targets).cpu().numpy())
            positions = batch.get("attention_mask") if by_token else None
            missing = np.full(n, np.nan)  # a module this forward did not call
            drift.append(np.stack([
                per_example_sq(q_rec.outputs[name] - fp_rec.outputs[name], positions).cpu().numpy()
                if name in fp_rec.outputs else missing
                for name in layers
            ], 1))
            norm.append(np.stack([
                per_example_sq(fp_rec.outputs[name], positions).cpu().numpy() if name in fp_rec.outputs else missing
                for name in layers
            ], 1))
    return PairedPass(
        list(layers),
        {k: np.concatenate(v) for k, v in stats["fp"].items()},
        {k: np.concatenate(v) for k, v in stats["quantized"].items()},
        np.concatenate(drift),
        np.concatenate(norm),
        np.concatenate(units),
    )
