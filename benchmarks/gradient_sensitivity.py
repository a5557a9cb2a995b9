"""Gradient (AutoQuantize-style, per group) vs measured sensitivity on the demo models.

Trains a demo recipe's FP model (real data: scikit-learn digits or Debian's Fashion-MNIST),
then on the same group-stratified training subset computes ``allocate_bits``'s two
sensitivities: "measured" (one forward pass per layer × width) and "gradient" (one forward +
backward for every layer and width). Prints

- the Spearman rank correlation of the per-layer scores, for every (width, group), and the
  wall time of each sensitivity;
- for each budget: the recipe each sensitivity chooses (worst_group objective), PTQ'd, and its
  *measured* worst-group loss on the test split — the gradient choice against the measured one.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/gradient_sensitivity.py \\
        [--recipe recipes/digits_vit.yaml] [--budgets 3 4] [--epochs N]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from hf_fairquant import allocate_bits, quantize
from hf_fairquant.audit import predict
from hf_fairquant.data import load_grouped_dataset
from hf_fairquant.run import build_model, load_recipe, train_fp_model

CANDIDATES = (2, 4, 8)


def group_losses(model: torch.nn.Module, test, codes: np.ndarray, names: list[str]) -> dict[str, float]:
    losses = predict(model.eval(), test).losses
    return {g: float(losses[codes == i].mean()) for i, g in enumerate(names)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/digits_vit.yaml")
    parser.add_argument("--budgets", type=float, nargs="+", default=[3.0, 4.0])
    parser.add_argument("--epochs", type=float, default=None, help="FP training epochs (default: the recipe's)")
    parser.add_argument("--calibration-size", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as out:
        run = load_recipe(args.recipe, output_dir=out)
        if args.epochs is not None:
            run.training.num_train_epochs = args.epochs
        run.training.disable_tqdm = True
        data, spec = load_grouped_dataset(run.data)
        train, test = data[run.data.train_split], data[run.data.eval_split]
        fp = train_fp_model(build_model(run.model, list(train.features["labels"].names)), run.training, train).eval()
    names = spec.names
    codes = spec.encode(test)

    timings, results = {}, {}
    for budget in args.budgets:
        for sensitivity in ("measured", "gradient"):
            started = time.perf_counter()
            results[budget, sensitivity] = allocate_bits(
                fp, train, spec, CANDIDATES, budget, "worst_group", sensitivity, calibration_size=args.calibration_size,
            )
            timings.setdefault(sensitivity, time.perf_counter() - started)

    measured, gradient = results[args.budgets[0], "measured"], results[args.budgets[0], "gradient"]
    layers = [layer.name for layer in measured.layers]
    print(f"{args.recipe}: {len(layers)} layers, groups {names}, candidates {list(CANDIDATES)}, "
          f"{args.calibration_size} stratified training examples, torch threads {torch.get_num_threads()}")
    print(f"sensitivity wall time (incl. the PTQ check): measured {timings['measured']:.1f} s, gradient {timings['gradient']:.1f} s "
          f"({timings['measured'] / timings['gradient']:.1f}× faster)\n")
    print("| width | group | Spearman ρ (per-layer scores, gradient vs measured) |\n| --- | --- | --- |")
    rhos = []
    for b in CANDIDATES:
        for g in names:
            m = [layer.sensitivity[b][g] for layer in measured.layers]
            q = [layer.sensitivity[b][g] for layer in gradient.layers]
            rho = float(spearmanr(m, q).statistic)
            rhos.append(rho)
            print(f"| {b} | {g} | {rho:+.3f} |")
    pooled = float(spearmanr(
        [layer.sensitivity[b][g] for layer in measured.layers for b in CANDIDATES for g in names],
        [layer.sensitivity[b][g] for layer in gradient.layers for b in CANDIDATES for g in names],
    ).statistic)
    print(f"\nmean ρ {np.mean(rhos):+.3f}, min ρ {np.min(rhos):+.3f}; pooled over layers × widths × groups ρ {pooled:+.3f}\n")

    print("| budget | sensitivity | eff. bits | " + " | ".join(f"test loss {g}" for g in names)
          + " | worst-group loss | vs measured's |\n|" + " --- |" * (len(names) + 5))
    fp_loss = group_losses(fp, test, codes, names)
    print("| — | FP | 32 | " + " | ".join(f"{fp_loss[g]:.4f}" for g in names) + f" | {max(fp_loss.values()):.4f} | — |")
    for budget in args.budgets:
        worst = {}
        for sensitivity in ("measured", "gradient"):
            alloc = results[budget, sensitivity]
            qmodel = quantize(copy.deepcopy(fp), alloc.recipe)
            losses = group_losses(qmodel, test, codes, names)
            worst[sensitivity] = max(losses.values())
            ratio = "—" if sensitivity == "measured" else f"{worst['gradient'] / worst['measured'] - 1:+.1%}"
            print(f"| {budget:g} | {sensitivity} | {alloc.effective_bits:.2f} | "
                  + " | ".join(f"{losses[g]:.4f}" for g in names) + f" | {worst[sensitivity]:.4f} | {ratio} |")


if __name__ == "__main__":
    main()
