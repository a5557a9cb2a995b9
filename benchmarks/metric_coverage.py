"""Coverage of the group_disparity metric's bootstrap intervals, by seeded simulation.

Draws R audits from known per-group cell probabilities (reference correct or not × evaluated
correct or not), runs the metric's own stratified paired bootstrap on each (its private
``_replicates`` and ``_hull_interval``, the code ``compute`` runs) and counts how often each
interval holds the true value. Prints the tables the metric card quotes ("How good are the
intervals"): the hull interval the metric reports next to the plain percentile interval.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/metric_coverage.py [--reps 2000] [--n-boot 1000]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np

from hf_fairquant.metrics import GROUP_DISPARITY


def load_module():
    """The metric's script, imported from its file (what evaluate.load imports)."""
    spec = importlib.util.spec_from_file_location("group_disparity_script", f"{GROUP_DISPARITY}/group_disparity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cells(acc: float, ref_acc: float, discordant: float) -> list[float]:
    """Cell probabilities [both wrong, only evaluated right, only reference right, both right] of a
    group with these accuracies and this share of discordant pairs."""
    drop = ref_acc - acc
    lost, gained = (discordant + drop) / 2, (discordant - drop) / 2
    both = ref_acc - lost
    return [1.0 - both - lost - gained, gained, lost, both]


def truth(p: np.ndarray) -> dict[str, np.ndarray | float]:
    acc, ref = p[:, 1] + p[:, 3], p[:, 2] + p[:, 3]
    drop = ref - acc
    return {
        "group_accuracy": acc, "group_accuracy_drop": drop, "accuracy_gap": acc.max() - acc.min(),
        "disparate_drop": drop.max() - drop.min(), "gap_change": (acc.max() - acc.min()) - (ref.max() - ref.min()),
    }


def estimates(counts: np.ndarray) -> dict[str, np.ndarray | float]:
    return truth(counts / counts.sum(axis=1, keepdims=True))


def coverage(module, p, n, reps: int, n_boot: int, level: float = 0.95, seed: int = 0) -> dict[str, dict[str, float]]:
    """Share of the ``reps`` simulated audits whose interval holds the truth, per statistic and
    method ('hull': the metric's; 'percentile': the plain one), averaged over groups for the
    per-group statistics."""
    rng = np.random.default_rng(seed)
    p, n = np.asarray(p, dtype=np.float64), np.asarray(n)
    true = truth(p)
    hits: dict[str, dict[str, float]] = {k: {"hull": 0.0, "percentile": 0.0} for k in true}
    alpha = 1.0 - level
    for _ in range(reps):
        counts = np.array([rng.multinomial(n_g, p_g) for n_g, p_g in zip(n, p, strict=True)])
        codes = np.repeat(np.repeat(np.arange(len(n)), 4), counts.ravel())
        cell = np.repeat(np.tile(np.arange(4), len(n)), counts.ravel())
        samples = module._replicates(codes, cell % 2 == 1, cell >= 2, len(n), n_boot, int(rng.integers(2**31)))
        est = estimates(counts)
        for key, t in true.items():
            lo, hi = module._hull_interval(samples[key], est[key], level, module._BOUNDS[key])
            q_lo, q_hi = np.quantile(samples[key], [alpha / 2, 1 - alpha / 2], axis=0)
            hits[key]["hull"] += float(np.mean((lo <= t + 1e-12) & (t - 1e-12 <= hi)))
            hits[key]["percentile"] += float(np.mean((q_lo <= t + 1e-12) & (t - 1e-12 <= q_hi)))
    return {k: {m: v / reps for m, v in d.items()} for k, d in hits.items()}


SCENARIOS = {
    "3 groups x 300, drops 2/6/15 pt (well separated)":
        ([cells(0.8817, 0.9031, 0.0807), cells(0.8012, 0.8629, 0.1213), cells(0.7021, 0.8533, 0.2119)], [300] * 3),
    "3 groups x 200, equal (exact tie: gap 0, disparate drop 0)": ([cells(0.80, 0.85, 0.10)] * 3, [200] * 3),
    "7 groups x 177, equal (exact tie)": ([cells(0.80, 0.85, 0.10)] * 7, [177] * 7),
    "3 groups x 200, gap 3 pt, disparate drop 1 pt (near tie)":
        ([cells(0.8013, 0.8512, 0.1011), cells(0.8314, 0.8709, 0.1011), cells(0.8007, 0.8406, 0.1011)], [200] * 3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    module = load_module()
    started = time.perf_counter()
    keys = ("group_accuracy_drop", "disparate_drop", "accuracy_gap", "gap_change")
    print(f"coverage of 95 % intervals, {args.reps} simulated audits, n_boot={args.n_boot} (hull | percentile)\n")
    print("| scenario | " + " | ".join(keys) + " |")
    print("| --- |" + " --- |" * len(keys))
    for name, (p, n) in SCENARIOS.items():
        cov = coverage(module, p, n, args.reps, args.n_boot)
        print(f"| {name} | " + " | ".join(f"{100 * cov[k]['hull']:.1f} \\| {100 * cov[k]['percentile']:.1f}"
                                            for k in keys) + " |")
    print("\nsmall groups: one group, accuracy 0.80 (reference 0.83, 9 % discordant pairs)\n")
    print("| examples | group_accuracy | group_accuracy_drop |")
    print("| --- | --- | --- |")
    for n_g in (5, 10, 20, 30, 50, 100):
        cov = coverage(module, [cells(0.8013, 0.8317, 0.0911)], [n_g], args.reps, args.n_boot)
        print(f"| {n_g} | {100 * cov['group_accuracy']['hull']:.1f} | {100 * cov['group_accuracy_drop']['hull']:.1f} |")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
