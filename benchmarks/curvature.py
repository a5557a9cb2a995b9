"""λ_max of a real model's loss: Lanczos (scipy eigsh) vs power iteration (PyHessian's method).

Same model, same batch, same Hessian-vector product (HVP), side by side in one run: how many
HVPs and how much wall time each needs to reach λ_max within ``--target`` relative error of a
reference (Lanczos to tol 1e-10). The batches are what ``explain`` uses: each group's loss on
up to ``--examples`` of its evaluation examples, over the Conv2d/Linear weights (``--parameters
all`` for every parameter). The model is trained here from a YAML recipe (default: the demo's
tiny ResNet on long-tailed Fashion-MNIST, about a minute on 2 cores) unless ``--fp-model``
names a trained folder (e.g. ``outputs/fashion_mnist_lt_resnet/fp_model``).

    PYTHONPATH=. python benchmarks/curvature.py [--recipe recipes/digits_vit.yaml] [--fp-model DIR]

Lanczos: for each Krylov size ``ncv`` (the first is explain's default) the loosest ARPACK
tolerance of a sweep whose answer is within the target from every start vector — what a user
would set. Power
iteration: the first iteration from which its Rayleigh quotient stays within the target — an
oracle stopping rule, the most favourable one to power iteration; PyHessian's own rule
(relative change < 1e-3) is shown too, with the error it stops at.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import set_seed  # noqa: E402

from hf_fairquant.inputs import GroupedInputs  # noqa: E402
from hf_fairquant.curvature import GroupObjective, top_eigenvalue  # noqa: E402
from hf_fairquant.run import load_pretrained, load_recipe, run  # noqa: E402
from hf_fairquant.quantization import quantizable_modules  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4)


class Converged(Exception):
    """Raised by Recorder once the quotient is well inside the target: no need to go on."""


class Recorder:
    """An HVP that logs, per call, the Rayleigh quotient vᵀHv/vᵀv and the elapsed time, and
    stops the run once the quotient is within ``stop_at`` of ``reference``."""

    def __init__(self, hvp, reference: float, stop_at: float):
        self.hvp, self.reference, self.stop_at = hvp, reference, stop_at
        self.quotients, self.times = [], []
        self.start = time.perf_counter()

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        hv = self.hvp(v)
        self.quotients.append(float(torch.dot(hv.double(), v.double()) / torch.dot(v.double(), v.double())))
        self.times.append(time.perf_counter() - self.start)
        if abs(self.quotients[-1] - self.reference) <= self.stop_at * abs(self.reference):
            raise Converged
        return hv


def load(args: argparse.Namespace, workdir: Path):
    """(model, {group: evaluation rows}) — trained here unless --fp-model is given."""
    recipe = load_recipe(args.recipe, output_dir=str(workdir / "run"))
    folder = args.fp_model
    if folder is None:
        started = time.perf_counter()
        recipe.audit.recipes, recipe.audit.n_boot = ["w8a8"], 0  # training is what we need
        recipe.explain.enabled, recipe.mitigation = False, None
        if args.epochs is not None:
            recipe.training.num_train_epochs = args.epochs
        # pipeline.run builds the model before the Trainer seeds anything: seed its init here
        set_seed(recipe.training.seed if recipe.training is not None else args.seed)
        run(recipe, echo=lambda *a: None)
        folder = workdir / "run" / "fp_model"
        print(f"trained {Path(args.recipe).name} ({recipe.training.num_train_epochs:g} epochs) "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
    model, splits, spec = load_pretrained(str(folder), recipe.data)
    evaluation = splits[recipe.data.eval_split]
    names = np.asarray(spec.group_names(evaluation))
    groups = {}
    for group in spec.names:
        rows = np.flatnonzero(names == group)
        rows = np.random.default_rng(args.seed).permutation(rows)[: args.examples]
        groups[group] = evaluation.select(np.sort(rows).tolist())
    return model, groups


def lanczos_sweep(objective, reference, ncv, seed):
    """[(tol, hvps, seconds, error)] over the tolerance sweep, from one start vector."""
    sweep = []
    for tol in TOLERANCES:
        started = time.perf_counter()
        est = top_eigenvalue(objective.hvp, objective.dim, method="lanczos", tol=tol, lanczos_vectors=ncv,
                             max_iterations=1000, seed=seed)
        sweep.append((tol, est.hvps, time.perf_counter() - started, abs(est.value - reference) / abs(reference)))
    return sweep


def lanczos_cost(sweeps, target):
    """The loosest tolerance whose answer is within ``target`` from every start vector (what a
    user would set) → (tol, [hvps per start], [seconds per start]); None if none is."""
    for i, tol in enumerate(TOLERANCES):
        if all(sweep[i][3] <= target for sweep in sweeps):
            return tol, [sweep[i][1] for sweep in sweeps], [sweep[i][2] for sweep in sweeps]
    return None


def power_cost(objective, reference, target, seed, max_iterations):
    """(hvps, seconds) until the Rayleigh quotient stays within ``target`` (followed until it is
    within target/10), and (hvps, error) of PyHessian's stopping rule at tol 1e-3."""
    recorder = Recorder(objective.hvp, reference, target / 10)
    try:
        top_eigenvalue(recorder, objective.dim, method="power", tol=1e-12, max_iterations=max_iterations, seed=seed)
    except Converged:
        pass
    errors = [abs(q - reference) / abs(reference) for q in recorder.quotients]
    reached = next((i for i in range(len(errors)) if all(e <= target for e in errors[i:])), None)
    rule = top_eigenvalue(objective.hvp, objective.dim, method="power", tol=1e-3, max_iterations=max_iterations, seed=seed)
    rule_result = (rule.hvps, abs(rule.value - reference) / abs(reference))
    return ((reached + 1, recorder.times[reached]) if reached is not None else None), rule_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "fashion_mnist_lt_resnet.yaml"))
    parser.add_argument("--fp-model", default=None, help="a trained model folder (skips training)")
    parser.add_argument("--examples", type=int, default=512, help="examples per group (explain's default cap)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--parameters", choices=["weights", "all"], default="weights",
                        help="the Conv2d/Linear weights (explain's default set) or every parameter")
    parser.add_argument("--target", type=float, default=1e-3)
    parser.add_argument("--ncv", default="8,4", help="Lanczos Krylov sizes; the first (explain's default) is the headline")
    parser.add_argument("--epochs", type=float, default=None, help="override the recipe's num_train_epochs")
    parser.add_argument("--seeds", default="0,1,2", help="start vectors")
    parser.add_argument("--max-power-iterations", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0, help="which examples form each group's batch")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    ncvs = [int(n) for n in args.ncv.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        model, groups = load(args, Path(tmp))
    weights = {f"{m}.weight" for m in quantizable_modules(model)}
    params = [p for n, p in model.named_parameters() if args.parameters == "all" or n in weights]
    print(f"{type(model).__name__}, {sum(p.numel() for p in params)} parameters ({args.parameters}); "
          f"target: λ_max within {args.target:g} relative error; start vectors {seeds}", flush=True)

    summary = []
    for group, rows in groups.items():
        objective = GroupObjective(model, params, list(GroupedInputs(model, rows).batches(args.batch_size)))
        started = time.perf_counter()
        objective.hvp(torch.ones(objective.dim))
        per_hvp = time.perf_counter() - started
        reference = top_eigenvalue(objective.hvp, objective.dim, tol=1e-10, lanczos_vectors=32, max_iterations=1000).value
        print(f"\ngroup {group}: {objective.num_examples} examples, one HVP ≈ {per_hvp * 1000:.0f} ms, "
              f"reference λ_max = {reference:.6g}", flush=True)
        sweeps = {n: [] for n in ncvs}
        power, rule = [], []
        for seed in seeds:
            for ncv in ncvs:
                sweeps[ncv].append(lanczos_sweep(objective, reference, ncv, seed))
                print(f"  start {seed}, Lanczos ncv={ncv}: "
                      + ", ".join(f"tol {t:g} → {h} HVPs, error {e:.1e}" for t, h, _, e in sweeps[ncv][-1]), flush=True)
            reached, rule_result = power_cost(objective, reference, args.target, seed, args.max_power_iterations)
            power.append(reached)
            rule.append(rule_result)
            print(f"  start {seed}, power iteration: within the target from HVP {reached[0] if reached else '—'}; "
                  f"PyHessian's rule stops after {rule_result[0]} HVPs at error {rule_result[1]:.1e}", flush=True)
        if any(p is None for p in power):
            raise SystemExit(f"power iteration did not reach the target within {args.max_power_iterations} HVPs")
        med = {}
        for n in ncvs:
            cost = lanczos_cost(sweeps[n], args.target)
            if cost is None:
                raise SystemExit(f"no tolerance in {TOLERANCES} reaches the target with ncv={n}")
            med[n] = (statistics.median(cost[1]), statistics.median(cost[2]), cost[0])
        med_power = (statistics.median(p[0] for p in power), statistics.median(p[1] for p in power))
        summary.append((group, reference, med, med_power, rule))

    print(f"\nHVPs and wall time to reach λ_max within {args.target:g} relative error "
          f"(median over start vectors {seeds}; same model, same batches, same HVP):\n")
    head = ["group", "λ_max"] + [f"Lanczos ncv={n}: tol, HVPs (s)" for n in ncvs]
    head += ["power iteration: HVPs (s)", "PyHessian rule: HVPs, error", f"ratio HVPs (ncv={ncvs[0]})", "ratio time"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    totals = {"lanczos_hvps": 0.0, "lanczos_s": 0.0, "power_hvps": 0.0, "power_s": 0.0}
    for group, reference, med, med_power, rule in summary:
        cells = [group, f"{reference:.5g}"] + [f"{med[n][2]:g}, {med[n][0]:g} ({med[n][1]:.2f})" for n in ncvs]
        cells += [f"{med_power[0]:g} ({med_power[1]:.2f})",
                  f"{statistics.median(r[0] for r in rule):g}, {statistics.median(r[1] for r in rule):.1e}",
                  f"{med[ncvs[0]][0] / med_power[0]:.2f}", f"{med[ncvs[0]][1] / med_power[1]:.2f}"]
        print("| " + " | ".join(cells) + " |")
        totals["lanczos_hvps"] += med[ncvs[0]][0]
        totals["lanczos_s"] += med[ncvs[0]][1]
        totals["power_hvps"] += med_power[0]
        totals["power_s"] += med_power[1]
    print(f"\nall groups: Lanczos (ncv={ncvs[0]}) / power iteration = "
          f"{totals['lanczos_hvps'] / totals['power_hvps']:.2f} of the HVPs "
          f"({totals['lanczos_hvps']:g} vs {totals['power_hvps']:g}), "
          f"{totals['lanczos_s'] / totals['power_s']:.2f} of the wall time "
          f"({totals['lanczos_s']:.2f} s vs {totals['power_s']:.2f} s)")


if __name__ == "__main__":
    main()
