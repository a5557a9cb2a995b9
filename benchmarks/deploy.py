"""Deployed vs simulated on a CPU: latency, throughput, bytes and per-group accuracy, side by side.

Five models: the demo ResNet (trained on long-tailed Fashion-MNIST, the demo recipe's training
section), the digits ViT (trained, recipes/digits_vit.yaml), and from-config ViT-S-size (hidden
384, 6 layers, 6 heads, patch 16, 224²), DistilBERT-size (hidden 768, 6 layers, 128 tokens) and
LM-shape (Qwen2.5-0.5B's config, 494 M parameters, ``--lm-batch`` × 128 tokens) models with
random weights (speed and bytes only). For each: torch FP32 (eager and ``torch.compile``d), the
quanto W8A8 simulation, the torchao artifacts (int8 dynamic W8A8 and int8 weight-only W8 over
every Linear; eager and compiled), ONNX Runtime FP32, ORT static int8 (W8A8, QDQ), ORT dynamic
int8 (W8) and ORT W4 (MatMulNBits, Linear; a Conv stays w8) — at the LM shape torch and torchao
only. A compiled row's first calls (one per input shape) compile: their seconds are the
"compile" column, apart from the timings. Ratios are against torch FP32 eager measured in the
same process, same thread count. For the trained models the audit (per group, 95 % bootstrap
intervals) of the simulated and the deployed models follows.

    PYTHONPATH=. python benchmarks/deploy.py [--threads 2] [--min-time 1.0] [--skip-training]
        [--resnet-model outputs/fashion_mnist_lt_resnet/fp_model] [--seq-len 128] [--models vit_s,distilbert,lm]
        [--lm-batch 8] [--lm-layers 24] [--no-compile]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from hf_fairquant import audit
from hf_fairquant.batching import iterate_batches
from hf_fairquant.data import load_grouped_dataset
from hf_fairquant.errors import FairQuantError
from hf_fairquant.run import build_model, load_recipe, train_fp_model
from hf_fairquant.run.models import class_names
from hf_fairquant.quantization import model_size_bytes, quantize
from hf_fairquant.quantization.onnx import export_onnx, load_onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
W4_VIT = {"preset": "w4", "name": "w4-conv8", "overrides": {"*embeddings*": "w8"}}


def best_call(fn, min_time: float, max_reps: int = 50) -> float:
    """Seconds of the fastest call of ``fn`` (one warm-up call, then repeats for ``min_time``)."""
    fn()
    best, spent, reps = float("inf"), 0.0, 0
    while (spent < min_time or reps < 1) and reps < max_reps:
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, spent, reps = min(best, took), spent + took, reps + 1
    return best


def _torchao_recipe(preset: str, model: torch.nn.Module) -> dict:
    """``preset`` on torchao over every Linear (a Conv2d, e.g. a ViT's patch embedding, stays float)."""
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return {"preset": preset, "backend": "torchao", **({"exclude": convs} if convs else {})}


def variants(model, recipe_w4, calibration, directory: Path, threads: int, calibration_size: int, *,
             onnx: bool = True, torchao_compiled: bool = True, quanto: bool = True):
    """(name, model, bytes on disk) for every runtime of one FP model; "(compiled)" ones run
    through ``torch.compile`` (the first call compiles; its seconds are reported apart)."""
    out = [("torch FP32", model, model_size_bytes(model))]
    if torchao_compiled:
        out.append(("torch FP32 (compiled)", torch.compile(model), model_size_bytes(model)))
    if quanto:
        sim = quantize(copy.deepcopy(model), "w8a8", calibration, calibration_size=calibration_size, batch_size=32)
        out.append(("quanto W8A8 (simulated)", sim, model_size_bytes(sim)))
    for label, preset in (("torchao W8A8 int8 dynamic", "w8a8"), ("torchao W8 weight-only", "w8")):
        try:
            ao = quantize(copy.deepcopy(model), _torchao_recipe(preset, model), calibration)
        except (FairQuantError, TypeError) as err:
            print(f"  torchao {preset}: skipped ({str(err)[:120]})")
            continue
        out.append((f"{label} (eager)", ao, model_size_bytes(ao)))
        if torchao_compiled:
            out.append((f"{label} (compiled)", torch.compile(ao), model_size_bytes(ao)))
    if not onnx:
        return out
    recipes = [("W8A8 static", "w8a8"), ("W8 dynamic", "w8")] + ([("W4 MatMulNBits", recipe_w4)] if recipe_w4 else [])
    for i, (label, recipe) in enumerate(recipes):
        result = export_onnx(model, recipe, directory, calibration, calibration_size=calibration_size, batch_size=32,
                             file_name=f"model_{i}.onnx")
        if i == 0:
            fp32 = load_onnx(result.fp32_path, num_threads=threads)
            out.insert(1, ("ORT FP32", fp32, fp32.size_bytes))
        ort = load_onnx(result.quantized_path, num_threads=threads)
        out.append((f"ORT {label}", ort, ort.size_bytes))
    return out


def speed_table(title: str, runs, batch1, batch32, min_time: float) -> list[str]:
    rows, base = [], None
    for name, m, size in runs:
        compile_s = None
        with torch.no_grad():
            if "(compiled)" in name:  # the first calls compile (one per input shape): timed apart
                started = time.perf_counter()
                m(**batch1)
                m(**batch32)
                compile_s = time.perf_counter() - started
            lat = best_call(lambda: m(**batch1), min_time)
            b32 = best_call(lambda: m(**batch32), min_time)
        n32 = len(next(iter(batch32.values())))
        if base is None:
            base = (lat, b32, size)
        compiled = "—" if compile_s is None else f"{compile_s:.0f} s"
        rows.append(f"| {title} | {name} | {size / 1e6:.2f} MB ({size / base[2]:.2f}×) | {1e3 * lat:.1f} ms "
                    f"({base[0] / lat:.2f}×) | {n32 / b32:.1f}/s ({base[1] / b32:.2f}×) | {compiled} |")
        print(rows[-1], f"(load {os.getloadavg()[0]:.1f})", flush=True)
    return rows


def image_inputs(channels: int, size: int, batch: int) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0))}


def random_model(kind: str, lm_layers: int = 24):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    if kind == "lm":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        from scale import QWEN25_05B

        return Qwen2ForCausalLM(Qwen2Config(**{**QWEN25_05B, "num_hidden_layers": lm_layers})).eval()
    if kind == "vit":
        cfg = ViTConfig(image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                        intermediate_size=1536, num_labels=10)
        return ViTForImageClassification(cfg).eval()
    return DistilBertForSequenceClassification(DistilBertConfig(num_labels=3)).eval()


def calibration_set(inputs: dict[str, torch.Tensor]):
    from datasets import Dataset

    return Dataset.from_dict({k: v.numpy() for k, v in inputs.items()}).with_format("torch")


def trained(recipe_path: Path, skip: bool, saved: str | None = None):
    """The recipe's FP model trained as the run trains it (or loaded from ``saved``, e.g. the
    demo's ``outputs/fashion_mnist_lt_resnet/fp_model``) and its grouped splits."""
    recipe = load_recipe(recipe_path, output_dir=tempfile.mkdtemp())
    data, spec = load_grouped_dataset(recipe.data)
    train, test = data[recipe.data.train_split], data[recipe.data.eval_split]
    if saved:
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification.from_pretrained(saved).eval(), train, test, spec
    torch.manual_seed(recipe.training.seed)
    model = build_model(recipe.model, class_names(train))
    if not skip:
        recipe.training.disable_tqdm = True
        model = train_fp_model(model, recipe.training, train)
    return model.eval(), train, test, spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of repeats per measurement")
    parser.add_argument("--skip-training", action="store_true", help="random weights for the trained models too")
    parser.add_argument("--models", default="resnet,digits_vit,vit_s,distilbert,lm")
    parser.add_argument("--resnet-model", default=None, help="the demo's trained fp_model folder (else: train it here)")
    parser.add_argument("--seq-len", type=int, default=128, help="DistilBERT-size and LM tokens per example")
    parser.add_argument("--lm-batch", type=int, default=8, help="sequences per throughput batch of the LM shape")
    parser.add_argument("--lm-layers", type=int, default=24, help="decoder layers of the LM shape (Qwen2.5-0.5B: 24)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}")
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}")
    header = ["| model | runtime | bytes (× FP32) | latency, batch 1 (× torch FP32) | throughput, batch 32 (LM: --lm-batch) "
              "(× torch FP32) | compile |", "| --- | --- | --- | --- | --- | --- |"]
    print("\n".join(header))
    table, audits = list(header), []
    chosen = args.models.split(",")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for key, recipe_file, w4 in (("resnet", "fashion_mnist_lt_resnet.yaml", None), ("digits_vit", "digits_vit.yaml", W4_VIT)):
            if key not in chosen:
                continue
            saved = args.resnet_model if key == "resnet" else None
            model, train, test, spec = trained(ROOT / "recipes" / recipe_file, args.skip_training, saved)
            runs = variants(model, w4, train, Path(tmp) / key, args.threads, 512, torchao_compiled=False)
            batch1 = next(iterate_batches(model, test, 1))
            batch32 = next(iterate_batches(model, test, 32))
            table += speed_table(key, runs, batch1, batch32, args.min_time)
            by_name = dict((n, m) for n, m, _ in runs)
            recipes = ["w8a8", "w8"] + ([w4] if w4 else [])
            deployed = {"W8A8": by_name["ORT W8A8 static"], "W8": by_name["ORT W8 dynamic"]}
            if w4:
                deployed["W4-CONV8"] = by_name["ORT W4 MatMulNBits"]
            report = audit(model, test, recipes, spec, calibration_dataset=train, deployed_models=deployed,
                           n_boot=200, calibration_size=512, progress=False)
            audits.append((key, report.to_markdown()))
        for key in ("vit_s", "distilbert", "lm"):
            if key not in chosen:
                continue
            model = random_model({"vit_s": "vit", "distilbert": "bert", "lm": "lm"}[key], args.lm_layers)
            g = torch.Generator().manual_seed(0)
            if key == "vit_s":
                batch1, batch32, w4 = image_inputs(3, 224, 1), image_inputs(3, 224, 32), W4_VIT
            elif key == "distilbert":
                ids = torch.randint(1000, 30000, (32, args.seq_len), generator=g)
                batch32 = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
                batch1 = {k: v[:1] for k, v in batch32.items()}
                w4 = "w4"
            else:  # the LM shape: no ONNX export (export_onnx targets classifiers), no quanto simulation (slow, not shipped)
                batch32 = {"input_ids": torch.randint(0, model.config.vocab_size, (args.lm_batch, args.seq_len), generator=g)}
                batch1 = {k: v[:1] for k, v in batch32.items()}
                w4 = None
            lm = key == "lm"
            runs = variants(model, w4, calibration_set(batch32), Path(tmp) / key, args.threads, 32, onnx=not lm,
                            torchao_compiled=not args.no_compile, quanto=not lm)
            table += speed_table(key, runs, batch1, batch32, args.min_time)
            del runs, model
    print("\n" + "\n".join(table))
    for key, text in audits:
        print(f"\n### {key}: per group, simulated and deployed\n\n{text}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
