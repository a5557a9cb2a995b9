"""Reproduce the paper's findings on long-tailed Fashion-MNIST; write the JSON behind docs/results.md.

Every model starts from the recipe (default: recipes/fashion_mnist_lt_resnet.yaml): its data
(tail classes at 5 %, balanced test), its FP training and its ``mitigation`` section. The data
split is fixed (the recipe's data seed); each seed s trains the FP model with seed s and runs
every fine-tune / QAT row with seed s from a copy of that seed's FP weights.

Parts, each written to ``<output-dir>/<part>.json`` (atomically, after every seed):

- ``resnet``: FP; PTQ W8A8/W4A8/W4/W2A8; FP fine-tunes with the sampling/weighting of each QAT
  row (the "FP trained the same way" that a row's Δgap is measured against), the fair one
  (= the mitigation section without quantization) then PTQ; QAT W4A8/W2A8 plain, + balanced
  sampling, + group weights, + DRO, + mixed precision (first and last layer at 8 bits),
  + allocated mixed precision (``auto:3``), everything combined (= the mitigation section).
- ``chain``: ``explain`` of each seed's FP model under W2A8 and W4A8.
- ``vit``: the main rows with a tiny ViT.
- ``performance``: FairQuantTrainer / Trainer step time, Lanczos / power iteration HVPs,
  ``audit`` / k+1 Trainer.evaluate loops, W4 checkpoint bytes / FP32 bytes — each measured
  side by side in one run (reusing benchmarks/trainer_overhead.py and benchmarks/curvature.py).
- ``adult``: real demographic groups — recipes/adult_sex_race_bert.yaml (UCI Adult as text, a
  small BERT with its WordLevel tokenizer, sex × race groups): FP, PTQ, the fair FP fine-tune and
  the QAT mitigation rows, and per seed ``explain`` under W2A8 on a group-stratified test
  subset (``ADULT_CHAIN_EXAMPLES`` per group at most) — bounded to ~15 min single-threaded.
- ``languages``: a causal LM on a real long tail of languages and scripts —
  recipes/manpages_llama.yaml (Debian's translated manual pages, its byte-level BPE, a small Llama
  pre-trained from scratch): PTQ per language / script / rarity, the chain at equal token counts
  (two draws), the fair FP fine-tune and fair QAT rows (benchmarks/languages.py).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/reproduce.py [--seeds 0,1,2] \
        [--parts resnet,chain,vit,performance,adult,languages] [--quick] [--output-dir docs/results]
    PYTHONPATH=. python benchmarks/render_results.py     # → docs/results.md, docs/results/*.png
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import Trainer, TrainingArguments, set_seed  # noqa: E402

from hf_fairquant import FairQuantTrainer, GroupSpec, QuantRecipe, audit, explain, quantize, save_quantized  # noqa: E402
from hf_fairquant._atomic import atomic_write_text  # noqa: E402
from hf_fairquant.audit import predict  # noqa: E402
from hf_fairquant.inputs import GroupedInputs  # noqa: E402
from hf_fairquant.curvature import GroupObjective, top_eigenvalue  # noqa: E402
from hf_fairquant.metrics import group_compute_metrics, load_group_disparity  # noqa: E402
from hf_fairquant.run import ModelSection, RunRecipe, build_model, load_recipe, load_recipe_data, train_fp_model  # noqa: E402
from hf_fairquant.quantization import effective_bits, quantizable_modules  # noqa: E402

from curvature import lanczos_cost, lanczos_sweep, power_cost  # noqa: E402  (benchmarks/)
from trainer_overhead import fair_run, plain_run  # noqa: E402  (benchmarks/)
from languages import LANGUAGES_RECIPE, languages_part, load_languages_context  # noqa: E402  (benchmarks/)
from languages import settings_of as languages_settings  # noqa: E402

PARTS = ("resnet", "chain", "vit", "performance", "adult", "languages")
#: The adult part's recipe, its rows (the mitigation rows' FP twin is the plain FP fine-tune) and
#: the test examples per group its chain (explain) uses at most.
ADULT_RECIPE = "recipes/adult_sex_race_bert.yaml"
ADULT_ROWS = ("FP", "PTQ W8A8", "PTQ W4A8", "PTQ W4", "PTQ W2A8", "FP fine-tune", "fair FP fine-tune",
              "fair FP → PTQ W2A8", "QAT W2A8", "QAT W2A8 + balanced", "QAT W2A8 + weights", "QAT W2A8 + DRO",
              "fair QAT (everything combined)")
ADULT_CHAIN_EXAMPLES = 128
ADULT_CHAIN_PRESETS = ("w2a8",)
FAIR_FP = "fair FP fine-tune"
PTQ_PRESETS = ("w8a8", "w4a8", "w4", "w2a8")
CHAIN_PRESETS = ("w2a8", "w4a8")
ALLOCATION_BUDGET = "auto:3"
MIXED_NAME = "w2a8-first-last-w8a8"
#: The tiny ViT: 28×28 images in 7×7 patches (16 tokens); about 78 % test accuracy after 8 epochs (~1 min, one thread).
VIT_CONFIG = dict(model_type="vit", image_size=28, patch_size=7, num_channels=1, hidden_size=64,
                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
VIT_TRAINING = dict(num_train_epochs=8, learning_rate=3e-3, weight_decay=0.05)
#: --quick: tiny settings for a smoke test of the whole flow (numbers meaningless).
QUICK = dict(fp_epochs=0.3, finetune_epochs=0.1, explain_examples=16, probes=4, steps=12, repeats=1)


# ---------------------------------------------------------------- data and scoring
@dataclass
class Context:
    """The recipe, the grouped splits and what scoring a model needs."""

    run: RunRecipe
    train: Any
    test: Any
    spec: GroupSpec
    class_names: list[str]
    labels: np.ndarray
    groups: list[str]
    classes: list[str]  # class name of every test example
    quick: bool = False
    tokenizer: Any = None  # a text recipe's tokenizer (trained on its training split)


def load_context(recipe_path: str, output_dir: str, quick: bool) -> Context:
    """Parse the recipe and load its data (fixed long-tail split) as ``hf-fairquant run`` does."""
    run = load_recipe(recipe_path, output_dir=output_dir)
    data, spec, tokenizer, _ = load_recipe_data(run.model, run.data)
    train, test = data[run.data.train_split], data[run.data.eval_split]
    class_names = list(train.features["labels"].names)
    labels = np.asarray(test.with_format("numpy")["labels"][:])
    classes = [class_names[i] for i in labels]
    return Context(run, train, test, spec, class_names, labels, spec.group_names(test), classes, quick, tokenizer)


@dataclass
class Scored:
    """One model's test predictions and the numbers a row shows."""

    preds: np.ndarray
    losses: np.ndarray
    metrics: dict[str, Any]


def score(model: torch.nn.Module, ctx: Context, reference: Scored | None = None) -> Scored:
    """Per-group and per-class accuracy (the group_disparity metric), Δgap vs ``reference``."""
    outputs = predict(model.eval(), ctx.test)
    preds, losses = outputs.predictions, outputs.losses
    metric = load_group_disparity()
    ref = dict(reference_predictions=reference.preds, reference_losses=reference.losses) if reference else {}
    by_group = metric.compute(predictions=preds, references=ctx.labels, groups=ctx.groups, losses=losses, n_boot=0, **ref)
    by_class = metric.compute(predictions=preds, references=ctx.labels, groups=ctx.classes, n_boot=0)
    metrics = {
        "overall": by_group["accuracy"],
        "group_accuracy": by_group["group_accuracy"],
        "group_mean_loss": by_group["group_mean_loss"],
        "gap": by_group["accuracy_gap"],
        "gap_change": by_group.get("gap_change"),
        "group_accuracy_drop": by_group.get("group_accuracy_drop"),
        "class_accuracy": by_class["group_accuracy"],
        "worst_class": by_class["worst_group"],
        "worst_class_accuracy": by_class["worst_group_accuracy"],
        "effective_bits": effective_bits(model),
    }
    return Scored(preds, losses, metrics)


# ---------------------------------------------------------------- rows
@dataclass(frozen=True)
class Row:
    """One table row. ``kind``: fp (the trained model), ptq (of ``base``), finetune (FP) or qat.

    ``reference``: the FP row trained the same way (Δgap is measured against it).
    ``settings``: FairQuantTrainingArguments overrides of the recipe's mitigation section.
    """

    name: str
    kind: str
    reference: str | None = None
    base: str | None = None
    quantization: Any = None
    settings: dict[str, Any] = field(default_factory=dict)


def mixed_recipe(model: torch.nn.Module) -> QuantRecipe:
    """W2A8 with the first and the last Conv2d/Linear at W8A8."""
    names = quantizable_modules(model)
    return QuantRecipe.parse({"preset": "w2a8", "name": MIXED_NAME, "overrides": {names[0]: "w8a8", names[-1]: "w8a8"}})


def ablation_settings(mitigation: Any) -> dict[str, dict[str, Any]]:
    """The sampling/weighting of each training variant. Balanced sampling and static weights are
    the mitigation's own when it uses them (else group_balanced at power 0.5 / sqrt weights)."""
    sampling = {"group_sampling": mitigation.group_sampling, "sampling_power": mitigation.sampling_power}
    if mitigation.group_sampling == "none":
        sampling = {"group_sampling": "group_balanced", "sampling_power": 0.5}
    weights = mitigation.group_weighting
    if weights in ("none", "dro"):
        weights = "sqrt_inverse_frequency"
    plain = {"group_sampling": "none", "group_weighting": "none"}
    return {
        "plain": plain,
        "balanced": {**plain, **sampling},
        "weights": {**plain, "group_weighting": weights},
        "dro": {**plain, "group_weighting": "dro"},
        "fair": {},  # the mitigation section as it is
    }


def resnet_rows(mitigation: Any, mixed: QuantRecipe) -> list[Row]:
    """All rows of the main table (order: a row's base/reference comes before it)."""
    s = ablation_settings(mitigation)
    combined = mitigation.quantization
    rows = [Row("FP", "fp")]
    rows += [Row(f"PTQ {p.upper()}", "ptq", "FP", "FP", p) for p in PTQ_PRESETS]
    rows += [
        Row("FP fine-tune", "finetune", settings=s["plain"]),
        Row("FP fine-tune + balanced", "finetune", settings=s["balanced"]),
        Row("FP fine-tune + weights", "finetune", settings=s["weights"]),
        Row("FP fine-tune + DRO", "finetune", settings=s["dro"]),
        Row("fair FP fine-tune", "finetune", settings=s["fair"]),
    ]
    rows += [Row(f"fair FP → PTQ {p.upper()}", "ptq", "fair FP fine-tune", "fair FP fine-tune", p) for p in ("w4a8", "w2a8")]
    rows += [
        Row(f"fair FP → PTQ {mixed}", "ptq", "fair FP fine-tune", "fair FP fine-tune", mixed),
        Row("QAT W4A8", "qat", "FP fine-tune", quantization="w4a8", settings=s["plain"]),
        Row("QAT W2A8", "qat", "FP fine-tune", quantization="w2a8", settings=s["plain"]),
        Row("QAT W2A8 + balanced", "qat", "FP fine-tune + balanced", quantization="w2a8", settings=s["balanced"]),
        Row("QAT W2A8 + weights", "qat", "FP fine-tune + weights", quantization="w2a8", settings=s["weights"]),
        Row("QAT W2A8 + DRO", "qat", "FP fine-tune + DRO", quantization="w2a8", settings=s["dro"]),
        Row("QAT W2A8 + mixed precision", "qat", "FP fine-tune", quantization=mixed, settings=s["plain"]),
        Row(f"QAT {ALLOCATION_BUDGET} allocated", "qat", "FP fine-tune", quantization=ALLOCATION_BUDGET, settings=s["plain"]),
        Row("fair QAT (everything combined)", "qat", "fair FP fine-tune", quantization=combined, settings=s["fair"]),
    ]
    return rows


VIT_ROWS = ("FP", "PTQ W8A8", "PTQ W4A8", "PTQ W4", "PTQ W2A8", "FP fine-tune", "fair FP fine-tune",
            f"fair FP → PTQ {MIXED_NAME}", "QAT W2A8", "fair QAT (everything combined)")


def vit_rows(mitigation: Any, mixed: QuantRecipe) -> list[Row]:
    """The main rows; 'everything combined' quantizes the ViT's first and last layer at 8 bits
    (the recipe's module patterns name ResNet modules)."""
    rows = [r for r in resnet_rows(mitigation, mixed) if r.name in VIT_ROWS]
    return [dataclasses.replace(r, quantization=mixed) if r.name == VIT_ROWS[-1] else r for r in rows]


# ---------------------------------------------------------------- training
def fine_tune_args(ctx: Context, row: Row, seed: int, output_dir: str) -> Any:
    """The mitigation section with the row's quantization and settings, seeded."""
    m = ctx.run.mitigation
    extra = {"num_train_epochs": QUICK["finetune_epochs"]} if ctx.quick else {}
    return dataclasses.replace(m, output_dir=output_dir, seed=seed, quantization=row.quantization if row.kind == "qat" else None,
                               disable_tqdm=True, **row.settings, **extra)


def fine_tune(fp_model: torch.nn.Module, ctx: Context, row: Row, seed: int) -> torch.nn.Module:
    """FairQuantTrainer from a copy of the FP weights (QAT when the row quantizes; frozen at the end)."""
    with tempfile.TemporaryDirectory() as out:
        trainer = FairQuantTrainer(model=copy.deepcopy(fp_model), args=fine_tune_args(ctx, row, seed, out),
                                   train_dataset=ctx.train)
        trainer.train()
    return trainer.model.eval()


def train_fp(ctx: Context, section: ModelSection, seed: int, overrides: dict[str, Any] | None = None) -> torch.nn.Module:
    """The recipe's FP training (with ``overrides``), seeded by ``seed`` (initial weights too)."""
    extra = dict(overrides or {})
    if ctx.quick:
        extra["num_train_epochs"] = QUICK["fp_epochs"]
    with tempfile.TemporaryDirectory() as out:
        args = dataclasses.replace(ctx.run.training, output_dir=out, seed=seed, disable_tqdm=True, **extra)
        set_seed(seed)
        model = build_model(section, ctx.class_names, "text" if ctx.tokenizer is not None else "image", tokenizer=ctx.tokenizer)
        return train_fp_model(model, args, ctx.train).eval()


def ptq(model: torch.nn.Module, ctx: Context, recipe: Any) -> torch.nn.Module:
    """PTQ of a copy, calibrated as the audit calibrates (group-stratified training sample)."""
    a = ctx.run.audit
    return quantize(copy.deepcopy(model), recipe, ctx.train, group_spec=ctx.spec, calibration_size=a.calibration_size, seed=a.seed)


def run_rows(rows: list[Row], fp_model: torch.nn.Module, fp_seconds: float, ctx: Context, seed: int,
             echo: Callable = print) -> dict[str, dict]:
    """Build and score every row for one seed → {row name: metrics + wall_time_s (the FP row's
    includes its ``fp_seconds`` of training)}."""
    models: dict[str, torch.nn.Module] = {"FP": fp_model}
    scored: dict[str, Scored] = {}
    out = {}
    for row in rows:
        started = time.perf_counter() - (fp_seconds if row.kind == "fp" else 0.0)
        if row.kind == "fp":
            model = fp_model
        elif row.kind == "ptq":
            model = ptq(models[row.base], ctx, row.quantization)
        else:
            model = fine_tune(fp_model, ctx, row, seed)
        if row.kind == "finetune":
            models[row.name] = model
        scored[row.name] = score(model, ctx, scored[row.reference] if row.reference else None)
        out[row.name] = {**scored[row.name].metrics, "wall_time_s": round(time.perf_counter() - started, 1)}
        m = out[row.name]
        echo(f"  seed {seed} {row.name:<36} bits {m['effective_bits']:5.2f} overall {100 * m['overall']:5.1f} "
             + " ".join(f"{g} {100 * a:5.1f}" for g, a in m["group_accuracy"].items())
             + f" gap {100 * m['gap']:5.1f} ({m['wall_time_s']:.0f} s)")
    return out


def row_info(rows: list[Row]) -> list[dict[str, Any]]:
    """What each row is, for the JSON."""
    def recipe(q: Any) -> Any:
        return q.to_dict() if isinstance(q, QuantRecipe) else q
    return [{"name": r.name, "kind": r.kind, "reference": r.reference, "base": r.base,
             "quantization": recipe(r.quantization), "settings": r.settings} for r in rows]


# ---------------------------------------------------------------- chain
def chain(fp_model: torch.nn.Module, ctx: Context, preset: str, test: Any = None) -> dict[str, Any]:
    """``explain`` under ``preset`` with the recipe's explain settings (on ``test``, default the
    whole test split) → its JSON form."""
    e = ctx.run.explain
    examples = QUICK["explain_examples"] if ctx.quick else e.examples_per_group
    probes = QUICK["probes"] if ctx.quick else e.probes
    result = explain(fp_model, preset, ctx.test if test is None else test, ctx.spec, calibration_dataset=ctx.train,
                     calibration_size=ctx.run.audit.calibration_size, examples_per_group=examples,
                     parameters=e.parameters, eigen_method=e.eigen_method, tol=e.tol, probes=probes,
                     batch_size=e.batch_size, seed=e.seed, progress=False)
    return result.to_dict()


# ---------------------------------------------------------------- performance
def trainer_overhead(ctx: Context) -> dict[str, Any]:
    """FairQuantTrainer (balanced sampling, DRO, range tracking) / plain Trainer median step time,
    W4A8 QAT, alternating runs (benchmarks/trainer_overhead.py)."""
    steps, repeats = (QUICK["steps"], QUICK["repeats"]) if ctx.quick else (60, 3)
    recipe, batch, warm = QuantRecipe.parse("w4a8"), 128, min(10, steps // 4)
    plain, fair = [], []
    for _ in range(repeats):
        plain += plain_run(ctx.train, ctx.class_names, recipe, steps, batch, GroupSpec("group"))[warm:]
        fair += fair_run(ctx.train, ctx.class_names, recipe, steps, batch)[warm:]
    p, f = statistics.median(plain), statistics.median(fair)
    return {"recipe": str(recipe), "batch_size": batch, "steps": steps, "repeats": repeats, "timed_steps": len(plain),
            "plain_ms": 1000 * p, "fair_ms": 1000 * f, "ratio": f / p}


def curvature(model: torch.nn.Module, ctx: Context) -> dict[str, Any]:
    """HVPs and seconds to λ_max within 1e-3 per group: Lanczos (ncv 8) / power iteration, on the
    trained FP model's Conv2d/Linear weights (benchmarks/curvature.py's measurements)."""
    target, starts, examples = 1e-3, (0, 1, 2), (QUICK["explain_examples"] if ctx.quick else 512)
    weights = {f"{m}.weight" for m in quantizable_modules(model)}
    params = [p for n, p in model.named_parameters() if n in weights]
    names = np.asarray(ctx.groups)
    groups = {}
    for group in ctx.spec.names:
        rows = np.sort(np.random.default_rng(0).permutation(np.flatnonzero(names == group))[:examples])
        objective = GroupObjective(model, params, list(GroupedInputs(model, ctx.test.select(rows.tolist())).batches(128)))
        reference = top_eigenvalue(objective.hvp, objective.dim, tol=1e-10, lanczos_vectors=32, max_iterations=1000).value
        cost = lanczos_cost([lanczos_sweep(objective, reference, 8, s) for s in starts], target)
        power = [power_cost(objective, reference, target, s, 3000)[0] for s in starts]
        if cost is None or any(p is None for p in power):
            raise RuntimeError(f"group {group}: a method did not reach λ_max within {target}")
        groups[group] = {"lambda_max": reference, "lanczos_tol": cost[0],
                         "lanczos_hvps": statistics.median(cost[1]), "lanczos_s": statistics.median(cost[2]),
                         "power_hvps": statistics.median(p[0] for p in power), "power_s": statistics.median(p[1] for p in power)}
    total = {k: sum(g[k] for g in groups.values()) for k in ("lanczos_hvps", "lanczos_s", "power_hvps", "power_s")}
    return {"target": target, "start_vectors": list(starts), "examples_per_group": examples, "parameters": objective.dim,
            "groups": groups, "ratio_hvps": total["lanczos_hvps"] / total["power_hvps"],
            "ratio_time": total["lanczos_s"] / total["power_s"]}


def plain_evaluate(models: list[torch.nn.Module], ctx: Context) -> None:
    """What a user would do without ``audit``: one Trainer.evaluate loop per model (group metrics)."""
    test = ctx.test.remove_columns("group").add_column("group", ctx.spec.encode(ctx.test).tolist()).with_format("torch")
    metrics = group_compute_metrics(group_names=ctx.spec.names)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_eval_batch_size=ctx.run.audit.batch_size, use_cpu=True,
                                 report_to="none", label_names=["labels", "group"], disable_tqdm=True)
        for model in models:
            Trainer(model=model, args=args, compute_metrics=metrics).evaluate(test)


def audit_timing(model: torch.nn.Module, ctx: Context) -> dict[str, Any]:
    """audit(FP + k recipes) vs the same k PTQ calls + k+1 Trainer.evaluate loops, alternating."""
    a, repeats = ctx.run.audit, (1 if ctx.quick else 3)
    recipes = list(PTQ_PRESETS)
    times: dict[str, list[float]] = {"audit": [], "quantize": [], "evaluate": []}
    for _ in range(repeats):
        started = time.perf_counter()
        audit(model, ctx.test, recipes, ctx.spec, calibration_dataset=ctx.train, calibration_size=a.calibration_size,
              batch_size=a.batch_size, n_boot=a.n_boot, seed=a.seed, progress=False)
        times["audit"].append(time.perf_counter() - started)
        started = time.perf_counter()
        models = [model] + [ptq(model, ctx, r) for r in recipes]
        times["quantize"].append(time.perf_counter() - started)
        started = time.perf_counter()
        plain_evaluate(models, ctx)
        times["evaluate"].append(time.perf_counter() - started)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"recipes": recipes, "n_boot": a.n_boot, "repeats": repeats, "audit_s": med["audit"],
            "quantize_s": med["quantize"], "evaluate_s": med["evaluate"],
            "ratio_vs_evaluate": med["audit"] / med["evaluate"],
            "ratio_vs_quantize_and_evaluate": med["audit"] / (med["quantize"] + med["evaluate"])}


def folder_bytes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def checkpoint_bytes(model: torch.nn.Module, ctx: Context) -> dict[str, Any]:
    """On-disk bytes: save_quantized of a W4 PTQ model vs save_pretrained of the FP32 model."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(Path(tmp) / "fp32")
        save_quantized(ptq(model, ctx, "w4"), Path(tmp) / "w4", recipe=QuantRecipe.parse("w4"))
        fp32, w4 = folder_bytes(Path(tmp) / "fp32"), folder_bytes(Path(tmp) / "w4")
    weights_fp32, weights_w4 = fp32["model.safetensors"], w4["model.safetensors"]
    return {"fp32_files": fp32, "w4_files": w4, "fp32_bytes": sum(fp32.values()), "w4_bytes": sum(w4.values()),
            "ratio": sum(w4.values()) / sum(fp32.values()), "weights_ratio": weights_w4 / weights_fp32}


# ---------------------------------------------------------------- bookkeeping
def versions() -> dict[str, str]:
    import datasets
    import optimum.quanto
    import transformers

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "datasets": datasets.__version__, "optimum-quanto": getattr(optimum.quanto, "__version__", "?"),
            "git_commit": commit + ("+uncommitted changes" if dirty.strip() else "")}


class PartWriter:
    """One part's JSON: metadata, then results added per seed, rewritten atomically each time.

    ``meta.wall_time_s``: the part's own work (the ``timed`` blocks); ``meta.command_wall_time_s``:
    the whole command so far."""

    def __init__(self, path: Path, meta: dict[str, Any], command_started: float, **static: Any):
        self.path, self.command_started = path, command_started
        self.data = {"meta": {**meta, "wall_time_s": 0.0}, **static}

    @contextlib.contextmanager
    def timed(self) -> Iterator[dict[str, Any]]:
        """Yield the data to fill; add the block's time to the part's and write the JSON."""
        started = time.perf_counter()
        yield self.data
        self.data["meta"]["wall_time_s"] = round(self.data["meta"]["wall_time_s"] + time.perf_counter() - started, 1)
        self.data["meta"]["command_wall_time_s"] = round(time.perf_counter() - self.command_started, 1)
        atomic_write_text(self.path, json.dumps(self.data, indent=1, allow_nan=False))


def settings_of(ctx: Context, seeds: list[int]) -> dict[str, Any]:
    """Recipe facts the document states."""
    m, t = ctx.run.mitigation, ctx.run.training
    quantization = m.quantization.to_dict() if isinstance(m.quantization, QuantRecipe) else m.quantization
    return {
        "seeds": seeds, "quick": ctx.quick, "data": dataclasses.asdict(ctx.run.data),
        "train_counts": ctx.spec.counts(ctx.train), "test_counts": ctx.spec.counts(ctx.test),
        "fp_training": {"num_train_epochs": t.num_train_epochs, "learning_rate": t.learning_rate,
                        "per_device_train_batch_size": t.per_device_train_batch_size},
        "mitigation": {"quantization": quantization, "group_sampling": m.group_sampling, "sampling_power": m.sampling_power,
                       "group_weighting": m.group_weighting, "num_train_epochs": m.num_train_epochs,
                       "learning_rate": m.learning_rate, "per_device_train_batch_size": m.per_device_train_batch_size},
        "class_names": ctx.class_names, "groups": ctx.spec.names,
        "tail_classes": list(ctx.run.data.long_tail_classes),
    }


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/fashion_mnist_lt_resnet.yaml")
    parser.add_argument("--adult-recipe", default=ADULT_RECIPE, help="the adult part's recipe")
    parser.add_argument("--languages-recipe", default=LANGUAGES_RECIPE, help="the languages part's recipe")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (FP training and every fine-tune)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke test of the flow, not results")
    parser.add_argument("--output-dir", default=None, help="default: docs/results (--quick: outputs/reproduce_quick)")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; allowed: {list(PARTS)}")
    if args.output_dir is None:
        args.output_dir = "outputs/reproduce_quick" if args.quick else "docs/results"
    return args


def main(argv: list[str] | None = None) -> None:
    command_started = time.perf_counter()
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    writers = {}
    fashion_parts = [p for p in args.parts if p not in ("adult", "languages")]
    if fashion_parts:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = load_context(args.recipe, tmp, args.quick)
        meta = part_meta(ctx, args.recipe, args.seeds)
        writers = {p: PartWriter(out / f"{p}.json", meta, command_started, **({} if p == "performance" else {"seeds": {}}))
                   for p in fashion_parts}
    if "adult" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            adult_ctx = load_context(args.adult_recipe, tmp, args.quick)
        adult_writer = PartWriter(out / "adult.json", part_meta(adult_ctx, args.adult_recipe, args.seeds), command_started, seeds={})
    if {"resnet", "chain", "performance"} & set(args.parts):
        resnet_parts(ctx, args.seeds, writers)
    if "vit" in writers:
        vit_part(ctx, args.seeds, writers["vit"])
    if "adult" in args.parts:
        adult_part(adult_ctx, args.seeds, adult_writer)
        writers["adult"] = adult_writer
    if "languages" in args.parts:
        writers["languages"] = languages(args, out, command_started)
    print(f"wrote {', '.join(str(w.path) for w in writers.values())}")


def languages(args: argparse.Namespace, out: Path, command_started: float) -> PartWriter:
    """The languages part (benchmarks/languages.py), written to ``<out>/languages.json``."""
    ctx = load_languages_context(args.languages_recipe, args.quick)
    meta = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "recipe": args.languages_recipe,
            "versions": versions(), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "settings": languages_settings(ctx, args.seeds)}
    writer = PartWriter(out / "languages.json", meta, command_started, seeds={})
    languages_part(ctx, args.seeds, writer)
    return writer


def part_meta(ctx: Context, recipe: str, seeds: list[int]) -> dict[str, Any]:
    if ctx.run.training is None or ctx.run.mitigation is None:
        raise SystemExit(f"{recipe} needs a `training` and a `mitigation` section")
    return {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "recipe": recipe,
            "versions": versions(), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "settings": settings_of(ctx, seeds)}


def train_timed(ctx: Context, section: ModelSection, seed: int, overrides: dict[str, Any] | None = None) -> tuple[torch.nn.Module, float]:
    started = time.perf_counter()
    model = train_fp(ctx, section, seed, overrides)
    seconds = round(time.perf_counter() - started, 1)
    print(f"seed {seed}: FP {section.config['model_type']} trained in {seconds} s", flush=True)
    return model, seconds


def resnet_parts(ctx: Context, seeds: list[int], writers: dict[str, PartWriter]) -> None:
    """Per seed: train the recipe's FP model once, then the resnet rows, the chain and (first
    seed) the performance figures that need a trained model. The resnet part's time includes
    the FP training (its FP row); the others' do not."""
    for seed in seeds:
        fp, fp_time = train_timed(ctx, ctx.run.model, seed)
        if "resnet" in writers:
            with writers["resnet"].timed() as data:
                rows = resnet_rows(ctx.run.mitigation, mixed_recipe(fp))
                data["rows"] = row_info(rows)
                data["seeds"][str(seed)] = {"fp_train_s": fp_time, "rows": run_rows(rows, fp, fp_time, ctx, seed)}
                data["meta"]["wall_time_s"] += fp_time
        if "chain" in writers:
            with writers["chain"].timed() as data:
                data["seeds"][str(seed)] = {p.upper(): chain(fp, ctx, p) for p in CHAIN_PRESETS}
        if "performance" in writers and seed == seeds[0]:
            for name, measure in (("bytes", checkpoint_bytes), ("audit", audit_timing), ("curvature", curvature),
                                  ("trainer_overhead", lambda _, c: trainer_overhead(c))):
                with writers["performance"].timed() as data:
                    data[name] = measure(fp, ctx)
                print(f"performance {name}: {data[name]}", flush=True)


def adult_rows(mitigation: Any) -> list[Row]:
    """The main rows and the QAT mitigation rows; every QAT row's Δgap is against the plain FP
    fine-tune (no FP twin per sampling/weighting variant: it keeps the 3-seed run bounded)."""
    unused = QuantRecipe.parse({"preset": "w2a8", "name": MIXED_NAME})  # names rows that ADULT_ROWS leaves out
    rows = [r for r in resnet_rows(mitigation, unused) if r.name in ADULT_ROWS]
    return [dataclasses.replace(r, reference="FP fine-tune") if r.kind == "qat" and r.reference != FAIR_FP else r
            for r in rows]


def stratified_test(ctx: Context, per_group: int) -> Any:
    """At most ``per_group`` test examples of every group (a seeded sample, in test order)."""
    names = np.asarray(ctx.groups)
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.permutation(np.flatnonzero(names == g))[:per_group] for g in ctx.spec.names])
    return ctx.test.select(np.sort(rows).tolist())


def adult_part(ctx: Context, seeds: list[int], writer: PartWriter) -> None:
    """Real demographic groups (UCI Adult, sex × race): per seed the FP BERT, its rows, the chain."""
    per_group = QUICK["explain_examples"] if ctx.quick else ADULT_CHAIN_EXAMPLES
    test = stratified_test(ctx, per_group)
    writer.data["chain_test_counts"] = ctx.spec.counts(test)
    for seed in seeds:
        with writer.timed() as data:
            fp, fp_time = train_timed(ctx, ctx.run.model, seed)
            rows = adult_rows(ctx.run.mitigation)
            data["rows"] = row_info(rows)
            result = {"fp_train_s": fp_time, "rows": run_rows(rows, fp, fp_time, ctx, seed)}
            started = time.perf_counter()
            result["chain"] = {p.upper(): chain(fp, ctx, p, test) for p in ADULT_CHAIN_PRESETS}
            result["chain_s"] = round(time.perf_counter() - started, 1)
            print(f"  seed {seed} chain ({', '.join(ADULT_CHAIN_PRESETS)}) in {result['chain_s']} s", flush=True)
            data["seeds"][str(seed)] = result


def vit_part(ctx: Context, seeds: list[int], writer: PartWriter) -> None:
    """The main rows with the tiny ViT, per seed."""
    writer.data["vit"] = {"config": VIT_CONFIG, "training": VIT_TRAINING}
    for seed in seeds:
        with writer.timed() as data:
            fp, fp_time = train_timed(ctx, ModelSection(config=dict(VIT_CONFIG)), seed, VIT_TRAINING)
            rows = vit_rows(ctx.run.mitigation, mixed_recipe(fp))
            data["rows"] = row_info(rows)
            data["seeds"][str(seed)] = {"fp_train_s": fp_time, "rows": run_rows(rows, fp, fp_time, ctx, seed)}


if __name__ == "__main__":
    main()
