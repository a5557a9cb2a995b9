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

from .._compiled import CompiledForward
from .._distributed import gather_in_order, my_share
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
    *,
    torch_compile: bool = False,
    shard: bool = False,
    timings: dict[str, float] | None = None,
) -> PairedPass:
    """Run every row of ``inputs`` through both models once (see the module docstring); the task
    of ``inputs`` gives the per-example logit statistics. ``torch_compile``: both models through
    ``torch.compile`` (compile seconds in ``timings["compile_s"]``); ``shard``: under several
    processes each runs its share of the batches, gathered in row order on every process."""
    by_token = inputs.task.unit_name != "example"  # padded positions carry no drift (a causal LM)
    total = inputs.num_batches(batch_size)
    mine = my_share(total, shard)
    local: dict[int, tuple] = {}
    with evaluating(fp), evaluating(quantized), ActivationRecorder(fp, layers) as fp_rec, ActivationRecorder(quantized, layers) as q_rec:
        forwards = {"fp": CompiledForward(fp, torch_compile), "quantized": CompiledForward(quantized, torch_compile)}
        batches = zip(mine, inputs.batches(batch_size, only=set(mine)))
        for index, (batch, targets) in tqdm(batches, total=len(mine), desc="FP vs quantized", disable=not progress, leave=False):
            fp_rec.outputs.clear()
            q_rec.outputs.clear()
            stats = {key: {stat: values.double().cpu().numpy()
                           for stat, values in inputs.task.logit_statistics(forward(**batch), targets).items()}
                     for key, forward in forwards.items()}
            n = len(stats["fp"]["loss"])
            units = inputs.task.units(targets).cpu().numpy()
            positions = batch.get("attention_mask") if by_token else None
            missing = np.full(n, np.nan)  # a module this forward did not call
            drift = np.stack([
                per_example_sq(q_rec.outputs[name] - fp_rec.outputs[name], positions).cpu().numpy()
                if name in fp_rec.outputs else missing
                for name in layers
            ], 1)
            norm = np.stack([
                per_example_sq(fp_rec.outputs[name], positions).cpu().numpy() if name in fp_rec.outputs else missing
                for name in layers
            ], 1)
            local[index] = (stats, drift, norm, units)
    if timings is not None and torch_compile:
        timings["compile_s"] = sum(f.compile_s for f in forwards.values()) if forwards["fp"].enabled else 0.0
    parts = gather_in_order(local, total, shard)
    return PairedPass(
        list(layers),
        {k: np.concatenate([p[0]["fp"][k] for p in parts]) for k in LOGIT_STATISTICS},
        {k: np.concatenate([p[0]["quantized"][k] for p in parts]) for k in LOGIT_STATISTICS},
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        np.concatenate([p[3] for p in parts]),
    )
