"""The ``languages`` part of benchmarks/reproduce.py: a causal LM on a real long tail of languages.

recipes/manpages_llama.yaml's set-up — Debian's translated manual pages in seven languages and five
scripts, its byte-level BPE trained on the training split, a small Llama from config pre-trained
from scratch — with seeds s = 0, 1, 2: seed s pre-trains the FP model (initial weights included) and
every fine-tune / QAT row from a copy of it. The data split and the tokenizer are fixed (the
recipe's data seed). Per seed:

- **PTQ rows** of the FP model: the recipe's audit recipes (optimum-quanto W8A8, W4, W4A8, W2A8;
  torchao int8 and intx int4), each calibrated as the audit calibrates (``hf_fairquant.quantize``
  on a language-stratified training sample) and scored per text by the package
  (``GroupedInputs.outputs``: mean next-token NLL and scored tokens), then grouped four ways by the
  ``group_disparity`` metric's language-model mode (token-weighted NLL, paired ΔNLL with
  group-stratified bootstrap intervals): by ``language``, by ``script``, by ``rarity`` (``rare``:
  languages with fewer than ``RARE_FRACTION`` of the largest language's training texts, else
  ``frequent``; the page also ranks languages by training tokens) and by ``latin`` (``Latin`` /
  ``non-Latin`` script).
- **The chain**: ``explain`` of the FP model under ``CHAIN_PRESET`` at equal token counts per
  language, twice (``EXPLAIN_DRAWS``: two seeded draws of texts), so every ‖∇L‖ and λ_max has a
  second estimate beside it — the draw-to-draw spread is the noise floor of λ_max (explain's own
  split-half floor is the one of ‖∇L‖).
- **Fine-tune rows**, each from a copy of the FP weights with the recipe's ``mitigation`` steps and
  learning rate: the plain and the fair (language-balanced sampling + Group-DRO) FP fine-tune, the
  fair FP fine-tune quantized after training (the mitigation's mixed recipe: the same mean bits as
  the fair QAT; and W2A8), plain and fair QAT at the mixed recipe (= the recipe's mitigation) and at
  W2A8 (optimum-quanto). Each row's ΔNLL is paired against the row in its ``reference``.

Every number the page shows is in ``docs/results/languages.json`` (per seed, per row, per
grouping); benchmarks/render_languages.py renders it.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from transformers import set_seed

from hf_fairquant import FairQuantTrainer, QuantRecipe, explain, quantize
from hf_fairquant.inputs import GroupedInputs
from hf_fairquant.metrics import load_group_disparity
from hf_fairquant.quantization import effective_bits
from hf_fairquant.run import build_model, load_recipe, load_recipe_data, train_fp_model
from hf_fairquant.run.models import resolve_task

LANGUAGES_RECIPE = "recipes/manpages_llama.yaml"
#: (row name, recipe) of the PTQ rows of the FP model: the recipe's audit recipes.
PTQ_ROWS = (("PTQ W8A8", "w8a8"), ("PTQ W4", "w4"), ("PTQ W4A8", "w4a8"), ("PTQ W2A8", "w2a8"),
            ("PTQ int8 (torchao)", "w8a8@torchao"), ("PTQ int4 (torchao)", "w4@torchao"))
#: The recipe explain measures the chain for: the one that raised every language's NLL most in
#: the recipe's single-seed run (README), fixed here so every seed explains the same recipe.
CHAIN_PRESET = "w2a8"
#: Two seeded draws of texts per language (explain's ``seed``): λ_max's noise floor.
EXPLAIN_DRAWS = (0, 1)
#: explain at equal scored tokens per language (the smallest test language, Greek, has ~4,300).
EXPLAIN_TOKENS = 1024
EXPLAIN_OPTIONS = dict(hvp_budget=20, probes=2, chunk_size=16)
#: A language is ``rare`` below this share of the largest language's training texts (with the
#: recipe's data: uk, ja, zh_CN, el — also the four with the fewest training tokens).
RARE_FRACTION = 0.25
GROUPINGS = ("language", "script", "rarity", "latin")
FAIR_FP = "fair FP fine-tune"
#: --quick: a smoke test of the flow (numbers meaningless).
QUICK = dict(fp_steps=6, finetune_steps=3, explain_tokens=48, hvp_budget=6, probes=1, n_boot=50)
#: The metric keys a row keeps per grouping (the rest of the metric's output is not shown).
KEPT = ("group_count", "group_tokens", "group_mean_loss", "group_mean_loss_ci", "group_perplexity", "mean_loss",
        "perplexity", "worst_group", "worst_group_loss", "loss_gap", "loss_gap_ci", "group_loss_increase",
        "group_loss_increase_ci", "loss_increase", "loss_increase_ci", "disparate_loss_increase",
        "disparate_loss_increase_ci", "most_increased_group", "agreement", "group_agreement",
        "groups_too_small_for_interval")


@dataclass
class LanguagesContext:
    """The recipe, its fixed splits and tokenizer, the groupings of the test texts."""

    run: Any
    task: Any
    train: Any
    test: Any
    spec: Any
    tokenizer: Any
    groupings: dict[str, list[str]]
    facts: dict[str, Any]
    quick: bool = False
    train_inputs: GroupedInputs | None = None
    test_inputs: GroupedInputs | None = None

    @property
    def n_boot(self) -> int:
        return QUICK["n_boot"] if self.quick else self.run.audit.n_boot


def tokens_per_language(split: Any) -> dict[str, int]:
    """Scored tokens (every token after a text's first) per language of a tokenised split."""
    lengths = np.asarray([len(ids) for ids in split["input_ids"][:]]) - 1
    languages = np.asarray(split["language"][:])
    return {str(g): int(lengths[languages == g].sum()) for g in sorted(set(languages.tolist()))}


def load_languages_context(recipe_path: str, quick: bool) -> LanguagesContext:
    """Parse the recipe and load its data and tokenizer as ``hf-fairquant run`` does."""
    with tempfile.TemporaryDirectory() as tmp:
        run = load_recipe(recipe_path, output_dir=tmp)
    task = resolve_task(run.model, run.data)
    data, spec, tokenizer, _ = load_recipe_data(run.model, run.data, task)
    train, test = data[run.data.train_split], data[run.data.eval_split]
    train_tokens, test_tokens = tokens_per_language(train), tokens_per_language(test)
    train_counts = spec.counts(train)
    largest = max(train_counts.values())
    rare = sorted(g for g, n in train_counts.items() if n < RARE_FRACTION * largest)
    scripts = dict(zip(test["language"][:], test["script"][:]))
    languages = [str(g) for g in test["language"][:]]
    groupings = {
        "language": languages,
        "script": [str(s) for s in test["script"][:]],
        "rarity": ["rare" if g in rare else "frequent" for g in languages],
        "latin": ["Latin" if scripts[g] == "Latin" else "non-Latin" for g in languages],
    }
    facts = {"train_counts": train_counts, "test_counts": spec.counts(test), "train_tokens": train_tokens,
             "test_tokens": test_tokens, "scripts": scripts, "rare": rare,
             "frequent": sorted(set(train_tokens) - set(rare)), "rare_fraction": RARE_FRACTION}
    return LanguagesContext(run, task, train, test, spec, tokenizer, groupings, facts, quick)


def settings_of(ctx: LanguagesContext, seeds: list[int], parameters: int | None = None) -> dict[str, Any]:
    """Recipe facts the page states."""
    r = ctx.run
    m, t, a = r.mitigation, r.training, r.audit
    quantization = m.quantization_recipe.to_dict() if m.quantization_recipe is not None else None
    return {
        "seeds": seeds, "quick": ctx.quick, "data": dataclasses.asdict(r.data), "groups": ctx.spec.names,
        "model_config": dict(r.model.config or {}), "tokenizer": r.model.tokenizer, "vocabulary": len(ctx.tokenizer),
        "parameters": parameters,
        "fp_training": {"max_steps": t.max_steps, "learning_rate": t.learning_rate,
                        "per_device_train_batch_size": t.per_device_train_batch_size},
        "mitigation": {"quantization": quantization, "group_sampling": m.group_sampling, "sampling_power": m.sampling_power,
                       "group_weighting": m.group_weighting, "dro_step_size": m.dro_step_size, "max_steps": m.max_steps,
                       "learning_rate": m.learning_rate, "per_device_train_batch_size": m.per_device_train_batch_size},
        "audit": {"calibration_size": a.calibration_size, "batch_size": a.batch_size, "n_boot": ctx.n_boot,
                  "confidence_level": a.confidence_level, "min_group_size": a.min_group_size},
        "explain": {"recipe": CHAIN_PRESET, "draws": list(EXPLAIN_DRAWS), "tokens_per_language": explain_tokens(ctx),
                    **explain_options(ctx)},
        **ctx.facts,
    }


def explain_tokens(ctx: LanguagesContext) -> int:
    return QUICK["explain_tokens"] if ctx.quick else EXPLAIN_TOKENS


def explain_options(ctx: LanguagesContext) -> dict[str, Any]:
    if ctx.quick:
        return {**EXPLAIN_OPTIONS, "hvp_budget": QUICK["hvp_budget"], "probes": QUICK["probes"]}
    return dict(EXPLAIN_OPTIONS)


# ---------------------------------------------------------------- rows
@dataclass(frozen=True)
class LMRow:
    """One row. ``kind``: fp, ptq (of ``base``), finetune (FP) or qat; ``reference``: the row its
    ΔNLL is paired against; ``settings``: FairQuantTrainingArguments overrides of the mitigation."""

    name: str
    kind: str
    reference: str | None = None
    base: str | None = None
    quantization: Any = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)


def mixed_name(ctx: LanguagesContext) -> str:
    return ctx.run.mitigation.quantization_recipe.name or "mixed"


def language_rows(ctx: LanguagesContext) -> list[LMRow]:
    """Every row, a row's base and reference before it."""
    mixed = ctx.run.mitigation.quantization_recipe
    name = mixed_name(ctx).upper()
    plain = {"group_sampling": "none", "group_weighting": "none"}
    rows = [LMRow("FP", "fp")]
    rows += [LMRow(n, "ptq", "FP", "FP", r) for n, r in PTQ_ROWS]
    rows += [
        LMRow("FP fine-tune", "finetune", "FP", settings=plain),
        LMRow(FAIR_FP, "finetune", "FP"),
        LMRow(f"fair FP → PTQ {name}", "ptq", FAIR_FP, FAIR_FP, mixed),
        LMRow("fair FP → PTQ W2A8", "ptq", FAIR_FP, FAIR_FP, "w2a8"),
        LMRow(f"QAT {name}", "qat", "FP fine-tune", quantization=mixed, settings=plain),
        LMRow(f"fair QAT {name}", "qat", FAIR_FP, quantization=mixed),
        LMRow("QAT W2A8", "qat", "FP fine-tune", quantization="w2a8", settings=plain),
        LMRow("fair QAT W2A8", "qat", FAIR_FP, quantization="w2a8"),
    ]
    return rows


def row_info(rows: list[LMRow]) -> list[dict[str, Any]]:
    def recipe(q: Any) -> Any:
        return q.to_dict() if isinstance(q, QuantRecipe) else q
    return [{"name": r.name, "kind": r.kind, "reference": r.reference, "base": r.base,
             "quantization": recipe(r.quantization), "settings": r.settings} for r in rows]


# ---------------------------------------------------------------- models
def pretrain(ctx: LanguagesContext, seed: int) -> torch.nn.Module:
    """The recipe's FP pre-training from scratch, seeded by ``seed`` (initial weights too)."""
    extra = {"max_steps": QUICK["fp_steps"], "warmup_steps": 1} if ctx.quick else {}
    with tempfile.TemporaryDirectory() as out:
        args = dataclasses.replace(ctx.run.training, output_dir=out, seed=seed, disable_tqdm=True, logging_steps=10_000, **extra)
        set_seed(seed)
        model = build_model(ctx.run.model, [], "text", ctx.task, tokenizer=ctx.tokenizer)
        return train_fp_model(model, args, ctx.train, processing_class=ctx.tokenizer, task=ctx.task).eval()


def fine_tune(fp: torch.nn.Module, ctx: LanguagesContext, row: LMRow, seed: int) -> torch.nn.Module:
    """FairQuantTrainer from a copy of the FP weights: the mitigation section with the row's
    quantization (None: full precision) and settings."""
    extra = {"max_steps": QUICK["finetune_steps"], "warmup_steps": 1} if ctx.quick else {}
    with tempfile.TemporaryDirectory() as out:
        args = dataclasses.replace(ctx.run.mitigation, output_dir=out, seed=seed, disable_tqdm=True, logging_steps=10_000,
                                   quantization=row.quantization if row.kind == "qat" else None, **row.settings, **extra)
        trainer = FairQuantTrainer(model=copy.deepcopy(fp).train(), args=args, train_dataset=ctx.train,
                                   processing_class=ctx.tokenizer, task=ctx.task)
        trainer.train()
    return trainer.model.eval()


def ptq(model: torch.nn.Module, ctx: LanguagesContext, recipe: Any) -> torch.nn.Module:
    """PTQ of a copy, calibrated as the audit calibrates (language-stratified training sample)."""
    a = ctx.run.audit
    return quantize(copy.deepcopy(model), recipe, ctx.train_inputs, group_spec=ctx.spec,
                    calibration_size=a.calibration_size, seed=a.seed)


# ---------------------------------------------------------------- scoring
def kept(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in KEPT if k in metrics}


def score(model: torch.nn.Module, ctx: LanguagesContext, reference: Any = None) -> tuple[Any, dict[str, dict]]:
    """One pass over the test texts (the package's per-text NLL and tokens), then the metric's
    language-model mode under every grouping, paired against ``reference``'s outputs."""
    outputs = ctx.test_inputs.outputs(model, ctx.run.audit.batch_size)
    metric = load_group_disparity()
    a = ctx.run.audit
    boot = dict(n_boot=ctx.n_boot, confidence_level=a.confidence_level, seed=a.seed, min_group_size=a.min_group_size)
    by = {name: kept(ctx.task.compute_metrics(metric, outputs, None, groups, reference=reference, **boot))
          for name, groups in ctx.groupings.items()}
    return outputs, by


def run_rows(rows: list[LMRow], fp: torch.nn.Module, fp_seconds: float, ctx: LanguagesContext, seed: int,
             echo: Callable = print) -> dict[str, dict]:
    """Build and score every row for one seed."""
    models: dict[str, torch.nn.Module] = {"FP": fp}
    outputs: dict[str, Any] = {}
    out = {}
    for row in rows:
        started = time.perf_counter() - (fp_seconds if row.kind == "fp" else 0.0)
        if row.kind == "fp":
            model = fp
        elif row.kind == "ptq":
            model = ptq(models[row.base], ctx, row.quantization)
        else:
            model = fine_tune(fp, ctx, row, seed)
        if row.kind == "finetune":
            models[row.name] = model
        outputs[row.name], by = score(model, ctx, outputs[row.reference] if row.reference else None)
        out[row.name] = {"effective_bits": effective_bits(model), "by": by,
                         "wall_time_s": round(time.perf_counter() - started, 1)}
        lang = by["language"]
        increase = lang.get("group_loss_increase")
        echo(f"  seed {seed} {row.name:<34} bits {out[row.name]['effective_bits']:5.2f} NLL {lang['mean_loss']:.4f} "
             + (" ".join(f"{g} {d:+.4f}" for g, d in increase.items()) if increase else "")
             + f" ({out[row.name]['wall_time_s']:.0f} s)", flush=True)
    return out


def chain(fp: torch.nn.Module, ctx: LanguagesContext) -> dict[str, Any]:
    """``explain`` under CHAIN_PRESET at equal tokens per language, once per draw → JSON forms."""
    a = ctx.run.audit
    draws = {}
    for draw in EXPLAIN_DRAWS:
        result = explain(fp, CHAIN_PRESET, ctx.test_inputs, ctx.spec, calibration_dataset=ctx.train_inputs,
                         calibration_size=a.calibration_size, examples_per_group=explain_tokens(ctx), seed=draw,
                         progress=False, **explain_options(ctx))
        draws[str(draw)] = result.to_dict()
    return draws


def languages_part(ctx: LanguagesContext, seeds: list[int], writer: Any) -> None:
    """Per seed: pre-train, every row, the chain (two draws); written after every seed."""
    rows = language_rows(ctx)
    for seed in seeds:
        with writer.timed() as data:
            started = time.perf_counter()
            fp = pretrain(ctx, seed)
            fp_seconds = round(time.perf_counter() - started, 1)
            print(f"seed {seed}: FP Llama pre-trained in {fp_seconds} s", flush=True)
            if ctx.test_inputs is None:  # validated once; every model of the study has the same inputs
                ctx.train_inputs = GroupedInputs(fp, ctx.train, ctx.spec, task=ctx.task, split="train", processing_class=ctx.tokenizer)
                ctx.test_inputs = GroupedInputs(fp, ctx.test, ctx.spec, task=ctx.task, split="test", processing_class=ctx.tokenizer)
                data["meta"]["settings"]["parameters"] = sum(p.numel() for p in fp.parameters())
            data["rows"] = row_info(rows)
            result = {"fp_train_s": fp_seconds, "rows": run_rows(rows, fp, fp_seconds, ctx, seed)}
            started = time.perf_counter()
            result["chain"] = chain(fp, ctx)
            result["chain_s"] = round(time.perf_counter() - started, 1)
            print(f"  seed {seed} chain ({CHAIN_PRESET}, draws {list(EXPLAIN_DRAWS)}) in {result['chain_s']} s", flush=True)
            data["seeds"][str(seed)] = result
