"""Every stage at Hub model size: what audit, explain, allocation and QAT cost at ViT-B/16,
DistilBERT-base and ResNet-50 scale and at an LM shape (Qwen2.5-0.5B's config, 494 M parameters),
as multiples of one FP evaluation pass, with tokens/s where it applies and peak memory.

From-config models (random weights: cost does not depend on what the weights learned) on
random inputs with two groups (3:1). For each model, in one process: one FP evaluation pass
over the ``--examples`` examples is timed first (the unit), then each stage, reporting its wall
time in FP passes, the Hessian-vector products it used, and its peak memory above the level
at its start (CPU: resident set size sampled every 5 ms; CUDA: ``torch.cuda.max_memory_allocated``).

- audit: FP + each ``--recipes`` PTQ model over the examples (``n_boot=0``), with the
  quantization and evaluation seconds of every model;
- explain: ``--explain-recipe`` with explain's defaults unless given (HVP budget, equal counts,
  chunked HVPs); plus one HVP on one group's sample, timed alone, so the cost at any budget
  can be read off;
- allocation: ``allocate_bits`` per ``--sensitivities`` entry. "gradient" runs in full;
  "measured" and "hessian" run on the first ``--sample-layers`` layers and are extrapolated
  linearly to every layer (marked "extrapolated"), since at this size they take hours;
- qat: one optimizer step of the FP model vs one of its ``--qat-recipe`` QAT twin (same
  batch, median of ``--steps`` steps after one warm-up);
- export: run if the installed package has an ONNX export, else reported as absent.

The LM shape (``--models lm``; Qwen2ForCausalLM from Qwen2.5-0.5B's config, ``--lm-layers`` of its
24 decoder layers) runs with plain forwards and a per-sequence next-token loss defined here (unpadded random
sequences: the causal-lm task's per-text loss without its masking; its own pass is compared with a
plain loop in benchmarks/lm_throughput.py): "audit" is the FP pass and, per ``--lm-recipes``
recipe, quantization and its pass, eager and through ``torch.compile`` (compile seconds apart,
predictions compared with eager); "explain" is explain's curvature work for one group at its
defaults (``benchmarks/hvp_cost.py``) over the Linear weights of the first ``--lm-explain-layers``
decoder layers, on ``--lm-explain-examples`` sequences, in gradients of the same loss.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/scale.py --models vit-b16 distilbert resnet50 lm \\
        --examples 32 --image-size 64 [--stages audit explain allocation qat export] [--device cuda]

``--device cuda`` needs a CUDA device and fails at once without one.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np
import torch

STAGES = ("audit", "explain", "allocation", "qat", "export")
MODELS = ("vit-b16", "distilbert", "resnet50", "lm")
#: Qwen2.5-0.5B's config.json (its shape; weights random)
QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu")


# ---------------------------------------------------------------- models and data
def build_model(name: str, image_size: int, num_labels: int, lm_layers: int = 24) -> torch.nn.Module:
    """From-config ViT-B/16, DistilBERT-base or ResNet-50 (their transformers defaults), or the LM shape."""
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    torch.manual_seed(0)
    if name == "lm":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return Qwen2ForCausalLM(Qwen2Config(**{**QWEN25_05B, "num_hidden_layers": lm_layers})).eval()
    if name == "vit-b16":  # ViTConfig() is ViT-B/16: hidden 768, 12 layers, 12 heads, MLP 3072
        return ViTForImageClassification(ViTConfig(image_size=image_size, num_labels=num_labels)).eval()
    if name == "distilbert":  # DistilBertConfig() is distilbert-base-uncased's shape
        return DistilBertForSequenceClassification(DistilBertConfig(num_labels=num_labels)).eval()
    if name == "resnet50":  # ResNetConfig() is ResNet-50: bottleneck, depths [3, 4, 6, 3]
        return ResNetForImageClassification(ResNetConfig(num_labels=num_labels)).eval()
    raise SystemExit(f"unknown model {name!r}; allowed: {list(MODELS)}")


def build_data(name: str, n: int, image_size: int, seq_len: int, num_labels: int, seed: int = 0):
    from datasets import Array3D, Dataset, Features, Sequence, Value

    rng = np.random.default_rng(seed)
    groups = ["minor" if i % 4 == 3 else "major" for i in range(n)]
    labels = rng.integers(0, num_labels, n)
    if name == "lm":
        features = Features(input_ids=Sequence(Value("int64")), group=Value("string"))
        return Dataset.from_dict({"input_ids": rng.integers(0, QWEN25_05B["vocab_size"], (n, seq_len)).tolist(),
                                  "group": groups}, features=features)
    if name == "distilbert":
        features = Features(input_ids=Sequence(Value("int64")), attention_mask=Sequence(Value("int64")),
                            labels=Value("int64"), group=Value("string"))
        return Dataset.from_dict({
            "input_ids": rng.integers(1000, 30000, (n, seq_len)).tolist(),
            "attention_mask": np.ones((n, seq_len), np.int64).tolist(), "labels": labels, "group": groups,
        }, features=features)
    features = Features(pixel_values=Array3D(shape=(3, image_size, image_size), dtype="float32"),
                        labels=Value("int64"), group=Value("string"))
    return Dataset.from_dict({
        "pixel_values": rng.normal(size=(n, 3, image_size, image_size)).astype(np.float32),
        "labels": labels, "group": groups,
    }, features=features)


# ---------------------------------------------------------------- measuring
class PeakMemory:
    """Peak memory above the level at entry, in MiB: CUDA allocator peak, or sampled RSS."""

    def __init__(self, device: str):
        self.device, self.peak_mib = device, 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        self._start = self._peak = self._rss()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.005):
                self._peak = max(self._peak, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak_mib = (torch.cuda.max_memory_allocated() - self._start) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())
        self.peak_mib = (self._peak - self._start) / 2**20


def timed(device: str, fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(seconds, peak MiB above the start, result) of ``fn()``."""
    with PeakMemory(device) as memory:
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return seconds, memory.peak_mib, result


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------- stages
def stage_audit(ctx: dict) -> list[dict]:
    from hf_fairquant.audit import audit

    recipes = ctx["args"].recipes
    seconds, peak, report = timed(ctx["device"], lambda: audit(
        ctx["model"], ctx["data"], recipes, "group", calibration_dataset=ctx["data"],
        calibration_size=ctx["calibration"], batch_size=ctx["batch"], n_boot=0, progress=False,
    ))
    timings = report.settings["timings_s"]
    p = ctx["pass_s"]
    parts = [f"FP eval {timings['FP']['evaluate_s'] / p:.2f}"]
    parts += [f"{name} quantize {t['quantize_s'] / p:.2f} + eval {t['evaluate_s'] / p:.2f}"
              for name, t in timings.items() if name != "FP"]
    k = len(recipes)
    evals = sum(t["evaluate_s"] for t in timings.values()) / p
    quant = [t["quantize_s"] / p for n, t in timings.items() if n != "FP"]
    goal = evals <= 1.5 * (k + 1) and max(quant) <= 1.0
    return [row("audit", seconds, p, peak, note="; ".join(parts),
                goal=f"eval ≤ {1.5 * (k + 1):g} and quantize ≤ 1/recipe: {'met' if goal else 'not met'} "
                     f"(eval {evals:.2f}, quantize max {max(quant):.2f})")]


def stage_explain(ctx: dict) -> list[dict]:
    from hf_fairquant import explain
    from hf_fairquant.curvature import GroupObjective
    from hf_fairquant.inputs import GroupedInputs

    args = ctx["args"]
    options = {k: v for k, v in {
        "hvp_budget": args.hvp_budget, "examples_per_group": args.explain_examples, "probes": args.probes,
        "chunk_size": args.chunk_size,
    }.items() if v is not None}
    seconds, peak, ex = timed(ctx["device"], lambda: explain(
        ctx["model"], args.explain_recipe, ctx["data"], "group", calibration_size=ctx["calibration"],
        batch_size=ctx["batch"], progress=False, **options,
    ))
    curvature = ex.curvature["fp"]
    hvps = sum(c.lambda_hvps + (c.trace_probes if not c.trace_exact else 0) + 1 for c in curvature.values())
    per_group = next(iter(curvature.values())).examples
    # one HVP alone, on one group's sample, for the cost at another budget
    model = ctx["model"]
    params = [model.get_submodule(d.name).weight for d in ex.layers]
    subset = ctx["data"].select(range(per_group))
    objective = GroupObjective(model, params, list(GroupedInputs(model, subset).batches(ctx["batch"])), ex.settings.get("chunk_size"))
    v = torch.randn(objective.dim, generator=torch.Generator().manual_seed(0))
    hvp_s, hvp_peak, _ = timed(ctx["device"], lambda: objective.hvp(v))
    from hvp_cost import plain_gradient  # the unit: one gradient on the model's own kernels

    grad_s = min(timed(ctx["device"], lambda: plain_gradient(objective))[0] for _ in range(2))
    per_group_s = (ex.settings["timings_s"]["gradients"] + ex.settings["timings_s"]["curvature"]) / len(curvature)
    p = ctx["pass_s"]
    converged = sum(c.lambda_converged for c in curvature.values())
    budget = ex.settings.get("hvp_budget")
    note = (f"{len(curvature)} groups × {per_group} examples (equal: {ex.settings.get('equal_examples')}), "
            f"HVP budget {budget}/group, λ_max converged {converged}/{len(curvature)} "
            f"(residuals {', '.join(f'{c.lambda_residual:.2g}' for c in curvature.values())}); "
            f"one HVP on {per_group} examples = {hvp_s / p:.2f} passes = {hvp_s / grad_s:.2f} gradients, {hvp_peak:.0f} MiB; "
            f"gradients + curvature per group and model = {per_group_s / grad_s:.1f} gradients")
    passes = seconds / p
    return [row("explain", seconds, p, peak, hvps=hvps, note=note,
                goal=f"≤ 60 passes: {'met' if passes <= 60 else 'not met'} ({passes:.1f}); ≤ 12 gradients per group: "
                     f"{'met' if per_group_s / grad_s <= 12 else 'not met'} ({per_group_s / grad_s:.1f})")]


def stage_allocation(ctx: dict) -> list[dict]:
    from hf_fairquant import allocate_bits
    from hf_fairquant.allocation import group_batches, hessian_sensitivity, measure_sensitivity
    from hf_fairquant.groups import GroupSpec
    from hf_fairquant.inputs import GroupedInputs
    from hf_fairquant.quantization.recipe import quantizable_modules

    args, model, data, p = ctx["args"], ctx["model"], ctx["data"], ctx["pass_s"]
    rows = []
    layers = quantizable_modules(model)
    bits = (2, 4, 8)
    for sensitivity in args.sensitivities:
        if sensitivity == "gradient":
            seconds, peak, allocation = timed(ctx["device"], lambda: allocate_bits(
                model, data, "group", bits, budget=4.0, sensitivity="gradient", calibration_size=len(data),
                batch_size=ctx["batch"],
            ))
            passes = seconds / p
            rows.append(row("allocation gradient", seconds, p, peak,
                            note=f"{len(layers)} layers × {len(bits)} widths, full allocate_bits (incl. the PTQ check)",
                            goal=f"≤ 10 passes: {'met' if passes <= 10 else 'not met'} ({passes:.1f})"))
            continue
        sample = layers[: args.sample_layers]
        spec = GroupSpec("group").fit(data)
        codes = spec.encode(data)
        batches = list(GroupedInputs(model, data).batches(ctx["batch"]))
        if sensitivity == "measured":
            fn = lambda: measure_sensitivity(model, batches, codes, spec.num_groups, sample, bits)  # noqa: E731
            hvps = 0
        else:
            grouped = group_batches(batches, codes, spec.num_groups, ctx["batch"])
            fn = lambda: hessian_sensitivity(model, grouped, sample, bits, probes=args.hessian_probes)  # noqa: E731
            hvps = len(sample) * spec.num_groups * args.hessian_probes
        seconds, peak, _ = timed(ctx["device"], fn)
        scale = len(layers) / len(sample)
        rows.append(row(f"allocation {sensitivity}", seconds * scale, p, peak, hvps=int(hvps * scale),
                        note=f"extrapolated ×{scale:.1f} from {len(sample)} of {len(layers)} layers "
                             f"({seconds / p:.1f} passes measured)" if scale > 1 else f"{len(layers)} layers",
                        goal="≤ 10 passes: " + ("met" if seconds * scale / p <= 10 else "not met")))
    return rows


def stage_qat(ctx: dict) -> list[dict]:
    from hf_fairquant.inputs import GroupedInputs
    from hf_fairquant.quantization import QuantRecipe, apply_plan, calibrate

    args, model = ctx["args"], ctx["model"]
    inputs, labels = next(GroupedInputs(model, ctx["data"]).batches(args.train_batch))

    def steps(net: torch.nn.Module) -> tuple[float, float]:
        net.train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-5)
        times = []
        with PeakMemory(ctx["device"]) as memory:
            for _ in range(args.steps + 1):  # the first is a warm-up
                started = time.perf_counter()
                loss = net(**inputs, labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if ctx["device"] == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - started)
        net.eval()
        return statistics.median(times[1:]), memory.peak_mib

    fp_step, fp_peak = steps(copy.deepcopy(model))
    recipe = QuantRecipe.parse(args.qat_recipe)
    twin = apply_plan(copy.deepcopy(model), recipe.plan(model))
    if recipe.uses_activations:
        calibrate(twin, [inputs])
    q_step, q_peak = steps(twin)
    p = ctx["pass_s"]
    return [
        row("FP train step", fp_step, p, fp_peak, note=f"batch {args.train_batch}, median of {args.steps}"),
        row(f"QAT train step ({args.qat_recipe})", q_step, p, q_peak,
            note=f"{q_step / fp_step:.2f}× the FP step, batch {args.train_batch}"),
    ]


def stage_export(ctx: dict) -> list[dict]:
    import importlib.util

    if importlib.util.find_spec("hf_fairquant.quantization.backends.onnxruntime") is None:
        return [row("export", None, ctx["pass_s"], None, note="no ONNX export in this checkout of hf_fairquant")]
    import tempfile

    import hf_fairquant

    export = getattr(hf_fairquant, "export_onnx", None)
    if export is None:
        return [row("export", None, ctx["pass_s"], None, note="hf_fairquant has no export_onnx")]
    with tempfile.TemporaryDirectory() as out:
        seconds, peak, _ = timed(ctx["device"], lambda: export(ctx["model"], ctx["data"], out))
    return [row("export (ONNX)", seconds, ctx["pass_s"], peak)]


# ---------------------------------------------------------------- the LM shape (plain forwards)
def lm_batches(data, batch: int, device: str = "cpu") -> list[torch.Tensor]:
    ids = torch.tensor(data["input_ids"][:]).to(device)
    return [ids[i : i + batch] for i in range(0, len(ids), batch)]


@torch.no_grad()
def lm_pass(forward, batches: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """One evaluation pass: each sequence's mean next-token NLL and every next-token prediction."""
    losses, predictions = [], []
    for ids in batches:
        logits = getattr(forward(input_ids=ids), "logits").float()[:, :-1]
        nxt = ids[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), nxt.reshape(-1), reduction="none")
        losses.append(nll.view(nxt.shape).mean(1).cpu().numpy())
        predictions.append(logits.argmax(-1).cpu().numpy())
    return np.concatenate(losses), np.concatenate(predictions)


def stage_audit_lm(ctx: dict) -> list[dict]:
    """FP pass and each recipe's quantization and pass, eager and compiled, in FP passes and tokens/s."""
    from hf_fairquant.quantization import quantize

    args, model, p = ctx["args"], ctx["model"], ctx["pass_s"]
    batches = lm_batches(ctx["data"], ctx["batch"], ctx["device"])
    tokens = sum(b.numel() for b in batches)
    fp_losses, fp_predictions = ctx["fp_outputs"]
    rows = [row("FP pass (eager)", p, p, ctx["pass_peak"], tokens_s=tokens / p,
                note=f"{len(ctx['data'])} × {args.lm_seq_len} tokens, batch {ctx['batch']}")]
    compiled_fp = None
    for name in ["fp", *args.lm_recipes]:
        if name == "fp":
            qmodel, quant_s = model, 0.0
            eager_losses, eager_predictions = fp_losses, fp_predictions
        else:
            quant_s, quant_peak, qmodel = timed(ctx["device"], lambda: quantize(
                copy.deepcopy(model), name, ctx["data"], calibration_size=ctx["calibration"], batch_size=ctx["batch"]))
            eager_s, eager_peak, (eager_losses, eager_predictions) = timed(ctx["device"], lambda: lm_pass(qmodel, batches))
            agree = float((eager_predictions == fp_predictions).mean())
            rows.append(row(f"{name} quantize + pass (eager)", quant_s + eager_s, p, max(quant_peak, eager_peak),
                            tokens_s=tokens / eager_s,
                            note=f"quantize {quant_s / p:.2f} + pass {eager_s / p:.2f} passes ({p / eager_s:.2f}× FP32 "
                                 f"eager's speed); {agree:.1%} of next-token predictions as FP's"))
        if not args.lm_compile:
            continue
        compiled = torch.compile(qmodel)
        first_s, _, _ = timed(ctx["device"], lambda: lm_pass(compiled, batches[:1]))
        run_s, run_peak, (losses, predictions) = timed(ctx["device"], lambda: lm_pass(compiled, batches))
        if name == "fp":
            compiled_fp = run_s
        same = float((predictions == eager_predictions).mean())
        diff = float(np.abs(losses - eager_losses).max())
        check = (f"next-token predictions {'identical to' if same == 1 else f'{same:.2%} as'} its eager pass's, "
                 f"NLL within {diff:.1e}")
        rows.append(row(f"{'FP' if name == 'fp' else name} pass (compiled)", run_s, p, run_peak, tokens_s=tokens / run_s,
                        note=f"{p / run_s:.2f}× FP32 eager's speed"
                             + (f", {compiled_fp / run_s:.2f}× FP32 compiled's" if compiled_fp and name != "fp" else "")
                             + f"; compile + first batch {first_s:.1f} s apart ({first_s / p:.2f} passes); {check}",
                        goal=("≥ 2.5× FP32 eager: " + ("met" if p / run_s >= 2.5 else "not met") + f" ({p / run_s:.2f}×)")
                        if "a8" in name and "torchao" in name else ""))
        compiled = qmodel = None  # one quantized copy alive at a time
    return rows


def stage_explain_lm(ctx: dict) -> list[dict]:
    """Explain's curvature work for one group at its defaults, before and now, in gradients."""
    from hvp_cost import NextTokenLoss, explain_sequence, plain_gradient

    from hf_fairquant.curvature import GroupObjective

    args, model, p = ctx["args"], ctx["model"], ctx["pass_s"]
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, QWEN25_05B["vocab_size"], (args.lm_explain_examples, args.lm_explain_seq), generator=g).to(ctx["device"])
    batch, task = ({"input_ids": ids}, ids), NextTokenLoss()
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
             and n.startswith(tuple(f"model.layers.{i}." for i in range(args.lm_explain_layers)))]
    params = [model.get_submodule(n).weight for n in names]
    whole = GroupObjective(model, params, [batch], task=task)
    g_s = min(timed(ctx["device"], lambda: plain_gradient(whole))[0] for _ in range(2))
    rows = []
    for label in ("before", "now"):
        if label == "before" and not args.lm_explain_before:
            continue
        seconds, peak, hvps = timed(ctx["device"], lambda: explain_sequence(model, batch, task, names, label == "before"))
        rows.append(row(f"explain per group ({label})", seconds, p, peak, hvps=hvps,
                        note=f"{seconds / g_s:.1f} gradients (one: {g_s:.1f} s) over {sum(q.numel() for q in params) / 1e6:.0f} M "
                             f"weights of the first {args.lm_explain_layers} layers, {args.lm_explain_examples} × "
                             f"{args.lm_explain_seq} tokens",
                        goal="≤ 12 gradients: " + ("met" if seconds / g_s <= 12 else "not met") + f" ({seconds / g_s:.1f})"))
    return rows


def row(stage: str, seconds: float | None, pass_s: float, peak: float | None, *, hvps: int = 0, note: str = "",
        goal: str = "", tokens_s: float | None = None) -> dict:
    return {"stage": stage, "seconds": None if seconds is None else round(seconds, 2),
            "passes": None if seconds is None else round(seconds / pass_s, 2), "hvps": hvps,
            "tokens_s": None if tokens_s is None else round(tokens_s, 1),
            "peak_mib": None if peak is None else round(peak), "goal": goal, "note": note}


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--examples", type=int, default=32, help="examples every stage runs over")
    parser.add_argument("--image-size", type=int, default=64, help="ViT-B/16 and ResNet-50 input size (224: the Hub size)")
    parser.add_argument("--seq-len", type=int, default=128, help="DistilBERT sequence length")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--calibration-size", type=int, default=None, help="PTQ calibration examples (default: examples / 4)")
    parser.add_argument("--recipes", nargs="+", default=["w8a8", "w4a8", "w2a8"])
    parser.add_argument("--explain-recipe", default="w4a8")
    parser.add_argument("--hvp-budget", type=int, default=None, help="explain's HVP budget per group (default: explain's)")
    parser.add_argument("--explain-examples", type=int, default=None, help="explain's examples per group (default: equal counts)")
    parser.add_argument("--probes", type=int, default=None, help="explain's Hutchinson probes (default: explain's)")
    parser.add_argument("--chunk-size", type=int, default=None, help="explain's micro-batch (default: explain's)")
    parser.add_argument("--sensitivities", nargs="+", default=["gradient", "measured", "hessian"],
                        choices=["gradient", "measured", "hessian"])
    parser.add_argument("--sample-layers", type=int, default=2, help="layers measured for the extrapolated sensitivities")
    parser.add_argument("--hessian-probes", type=int, default=2)
    parser.add_argument("--qat-recipe", default="w4a8")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, OMP_NUM_THREADS)")
    parser.add_argument("--lm-layers", type=int, default=24, help="decoder layers of the LM shape (Qwen2.5-0.5B: 24)")
    parser.add_argument("--lm-seq-len", type=int, default=128, help="tokens per sequence of the LM shape")
    parser.add_argument("--lm-examples", type=int, default=8, help="sequences of the LM shape's audit pass")
    parser.add_argument("--lm-recipes", nargs="+", default=["w8a8@torchao", "w8@torchao", "w8a8"])
    parser.add_argument("--lm-compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time each LM pass through torch.compile")
    parser.add_argument("--lm-explain-layers", type=int, default=4, help="decoder layers whose weights explain's curvature takes")
    parser.add_argument("--lm-explain-examples", type=int, default=4)
    parser.add_argument("--lm-explain-seq", type=int, default=64)
    parser.add_argument("--lm-explain-before", action=argparse.BooleanOptionalAction, default=True,
                        help="also time explain's curvature work as it was before (SDPA math, fresh products)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False (no CUDA device or a CPU-only torch "
                         f"{torch.__version__}); run without --device cuda, or on a machine with a GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    calibration = args.calibration_size or max(1, args.examples // 4)

    from hf_fairquant.audit import predict

    results = []
    print(f"examples {args.examples}, image {args.image_size}², seq {args.seq_len}, batch {args.batch_size}, "
          f"calibration {calibration}, device {args.device}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    if "lm" in args.models:
        print(f"LM shape: Qwen2.5-0.5B's config with {args.lm_layers} of 24 layers, {args.lm_examples} × {args.lm_seq_len} "
              f"tokens, recipes {args.lm_recipes}, compiled {args.lm_compile}", flush=True)
    for name in args.models:
        num_labels = 2 if name == "distilbert" else 10
        model = build_model(name, args.image_size, num_labels, args.lm_layers).to(args.device)
        lm = name == "lm"
        data = build_data(name, args.lm_examples if lm else args.examples, args.image_size,
                          args.lm_seq_len if lm else args.seq_len, num_labels)
        with quiet():
            extra = {}
            if lm:
                batches = lm_batches(data, args.batch_size, args.device)
                lm_pass(model, batches[:1])  # warm-up
                runs = [timed(args.device, lambda: lm_pass(model, batches)) for _ in range(2)]
                pass_s, extra["pass_peak"], extra["fp_outputs"] = min(runs, key=lambda r: r[0])
            else:
                predict(model, data, args.batch_size)  # warm-up
                pass_s = min(timed(args.device, lambda: predict(model, data, args.batch_size))[0] for _ in range(2))
            ctx = {"args": args, "model": model, "data": data, "pass_s": pass_s, "device": args.device,
                   "batch": args.batch_size, "calibration": calibration, **extra}
            params = sum(p.numel() for p in model.parameters())
            print(f"\n## {name}: {params / 1e6:.1f} M parameters; one FP pass over {len(data)} examples = {pass_s:.2f} s", flush=True)
            for stage in args.stages:
                if lm and stage not in ("audit", "explain"):
                    print(f"  {stage}: not run at the LM shape (needs the causal-LM task)", flush=True)
                    continue
                for r in globals()[f"stage_{stage}" + ("_lm" if lm else "")](ctx):
                    r.update(model=name, params_m=round(params / 1e6, 1), pass_s=round(pass_s, 3))
                    results.append(r)
                    print(f"  {r['stage']}: {r['seconds']} s = {r['passes']} passes, {r['hvps']} HVPs, "
                          f"{r['tokens_s']} tokens/s, peak +{r['peak_mib']} MiB; {r['goal']} {r['note']} "
                          f"(load {os.getloadavg()[0]:.1f})", flush=True)
        model = data = None  # freed before the next model
    print("\n" + table(results, args, calibration))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": vars(args) | {"calibration": calibration}, "rows": results}, f, indent=2)
    return results


def table(results: list[dict], args: argparse.Namespace, calibration: int) -> str:
    head = ("| model | stage | × FP pass | HVPs | tokens/s | peak MiB | goal | notes |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- |")
    lines = [head]
    for r in results:
        passes = "—" if r["passes"] is None else f"{r['passes']:.2f}"
        peak = "—" if r["peak_mib"] is None else str(r["peak_mib"])
        tokens = "—" if r.get("tokens_s") is None else f"{r['tokens_s']:.0f}"
        lines.append(f"| {r['model']} | {r['stage']} | {passes} | {r['hvps'] or '—'} | {tokens} | {peak} | "
                     f"{r['goal'] or '—'} | {r['note']} |")
    return "\n".join(lines) + (
        f"\n\nConfiguration: {args.examples} examples, images {args.image_size}², DistilBERT seq {args.seq_len}, "
        f"batch {args.batch_size}, calibration {calibration}, device {args.device}, "
        f"{torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f} at the end; one FP pass per model: "
        + ", ".join(f"{m} {s:.2f} s" for m, s in dict((r["model"], r["pass_s"]) for r in results).items()) + "."
    )


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
