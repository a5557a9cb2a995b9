"""Every stage at Hub model size: what audit, explain, allocation and QAT cost at ViT-B/16,
DistilBERT-base and ResNet-50 scale, as multiples of one FP evaluation pass.

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

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/scale.py --models vit-b16 distilbert resnet50 \\
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
MODELS = ("vit-b16", "distilbert", "resnet50")


# ---------------------------------------------------------------- models and data
def build_model(name: str, image_size: int, num_labels: int) -> torch.nn.Module:
    """From-config ViT-B/16, DistilBERT-base or ResNet-50 (their transformers defaults)."""
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    torch.manual_seed(0)
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
    p = ctx["pass_s"]
    converged = sum(c.lambda_converged for c in curvature.values())
    budget = ex.settings.get("hvp_budget")
    note = (f"{len(curvature)} groups × {per_group} examples (equal: {ex.settings.get('equal_examples')}), "
            f"HVP budget {budget}/group, λ_max converged {converged}/{len(curvature)} "
            f"(residuals {', '.join(f'{c.lambda_residual:.2g}' for c in curvature.values())}); "
            f"one HVP on {per_group} examples = {hvp_s / p:.2f} passes, {hvp_peak:.0f} MiB")
    passes = seconds / p
    return [row("explain", seconds, p, peak, hvps=hvps, note=note,
                goal=f"≤ 60 passes: {'met' if passes <= 60 else 'not met'} ({passes:.1f})")]


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


def row(stage: str, seconds: float | None, pass_s: float, peak: float | None, *, hvps: int = 0, note: str = "", goal: str = "") -> dict:
    return {"stage": stage, "seconds": None if seconds is None else round(seconds, 2),
            "passes": None if seconds is None else round(seconds / pass_s, 2), "hvps": hvps,
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
          f"calibration {calibration}, device {args.device}, torch threads {torch.get_num_threads()}", flush=True)
    for name in args.models:
        num_labels = 2 if name == "distilbert" else 10
        model = build_model(name, args.image_size, num_labels).to(args.device)
        data = build_data(name, args.examples, args.image_size, args.seq_len, num_labels)
        with quiet():
            predict(model, data, args.batch_size)  # warm-up
            pass_s = min(timed(args.device, lambda: predict(model, data, args.batch_size))[0] for _ in range(2))
            ctx = {"args": args, "model": model, "data": data, "pass_s": pass_s, "device": args.device,
                   "batch": args.batch_size, "calibration": calibration}
            params = sum(p.numel() for p in model.parameters())
            print(f"\n## {name}: {params / 1e6:.1f} M parameters; one FP pass over {args.examples} examples = {pass_s:.2f} s", flush=True)
            for stage in args.stages:
                for r in globals()[f"stage_{stage}"](ctx):
                    r.update(model=name, params_m=round(params / 1e6, 1), pass_s=round(pass_s, 3))
                    results.append(r)
                    print(f"  {r['stage']}: {r['seconds']} s = {r['passes']} passes, {r['hvps']} HVPs, "
                          f"peak +{r['peak_mib']} MiB; {r['goal']} {r['note']}", flush=True)
        del model, data
    print("\n" + table(results, args, calibration))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": vars(args) | {"calibration": calibration}, "rows": results}, f, indent=2)
    return results


def table(results: list[dict], args: argparse.Namespace, calibration: int) -> str:
    head = "| model | stage | × FP pass | HVPs | peak MiB | goal | notes |\n| --- | --- | --- | --- | --- | --- | --- |"
    lines = [head]
    for r in results:
        passes = "—" if r["passes"] is None else f"{r['passes']:.2f}"
        peak = "—" if r["peak_mib"] is None else str(r["peak_mib"])
        lines.append(f"| {r['model']} | {r['stage']} | {passes} | {r['hvps'] or '—'} | {peak} | {r['goal'] or '—'} | {r['note']} |")
    return "\n".join(lines) + (
        f"\n\nConfiguration: {args.examples} examples, images {args.image_size}², DistilBERT seq {args.seq_len}, "
        f"batch {args.batch_size}, calibration {calibration}, device {args.device}, "
        f"{torch.get_num_threads()} torch thread(s); one FP pass per model: "
        + ", ".join(f"{m} {s:.2f} s" for m, s in dict((r["model"], r["pass_s"]) for r in results).items()) + "."
    )


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
