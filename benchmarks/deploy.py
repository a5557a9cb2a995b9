"""Deployed vs simulated on a CPU: latency, throughput, bytes and per-group accuracy, side by side.

Four models: the demo ResNet (trained on long-tailed Fashion-MNIST, the demo recipe's training
section), the digits ViT (trained, recipes/digits_vit.yaml), and from-config ViT-S-size (hidden
384, 6 layers, 6 heads, patch 16, 224²) and DistilBERT-size (hidden 768, 6 layers, 128 tokens)
models with random weights (speed and bytes only). For each: torch FP32, the quanto W8A8
simulation, torchao (if its backend is registered), ONNX Runtime FP32, ORT static int8 (W8A8,
QDQ), ORT dynamic int8 (W8) and ORT W4 (MatMulNBits, Linear; a Conv stays w8). Ratios are
against torch FP32 measured in the same process, same thread count. For the trained models the
audit (per group, 95 % bootstrap intervals) of the simulated and the deployed models follows.

    PYTHONPATH=. python benchmarks/deploy.py [--threads 2] [--min-time 1.0] [--skip-training]
        [--resnet-model outputs/fashion_mnist_lt_resnet/fp_model] [--seq-len 128] [--models resnet,vit_s]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hf_fairquant import audit
from hf_fairquant.batching import iterate_batches
from hf_fairquant.data import load_grouped_dataset
from hf_fairquant.errors import FairQuantError
from hf_fairquant.run import build_model, load_recipe, train_fp_model
from hf_fairquant.run.models import class_names
from hf_fairquant.quantization import QuantRecipe, model_size_bytes, quantize
from hf_fairquant.quantization.onnx import export_onnx, load_onnx

ROOT = Path(__file__).resolve().parents[1]
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


def variants(model, recipe_w4, calibration, directory: Path, threads: int, calibration_size: int):
    """(name, model, bytes on disk) for every runtime of one FP model."""
    out = [("torch FP32", model, model_size_bytes(model))]
    sim = quantize(copy.deepcopy(model), "w8a8", calibration, calibration_size=calibration_size, batch_size=32)
    out.append(("quanto W8A8 (simulated)", sim, model_size_bytes(sim)))
    try:
        ao = quantize(copy.deepcopy(model), {"preset": "w8", "backend": "torchao"}, calibration)
        out.append(("torchao W8 (simulated)", ao, model_size_bytes(ao)))
    except (FairQuantError, TypeError) as err:
        print(f"  torchao: skipped ({str(err)[:120]})")
    recipes = [("W8A8 static", "w8a8"), ("W8 dynamic", "w8")] + ([("W4 MatMulNBits", recipe_w4)] if recipe_w4 else [])
    for i, (label, recipe) in enumerate(recipes):
        result = export_onnx(model, recipe, directory, calibration, calibration_size=calibration_size, batch_size=32,
                             file_name=f"model_{i}.onnx")
        if i == 0:
            fp32 = load_onnx(result.fp32_path, num_threads=threads)
            out.insert(2, ("ORT FP32", fp32, fp32.size_bytes))
        ort = load_onnx(result.quantized_path, num_threads=threads)
        out.append((f"ORT {label}", ort, ort.size_bytes))
    return out


def speed_table(title: str, runs, batch1, batch32, min_time: float) -> list[str]:
    rows, base = [], None
    for name, m, size in runs:
        with torch.no_grad():
            lat = best_call(lambda: m(**batch1), min_time)
            b32 = best_call(lambda: m(**batch32), min_time)
        n32 = len(next(iter(batch32.values())))
        if base is None:
            base = (lat, b32, size)
        rows.append(f"| {title} | {name} | {size / 1e6:.2f} MB ({size / base[2]:.2f}×) | {1e3 * lat:.1f} ms "
                    f"({base[0] / lat:.2f}×) | {n32 / b32:.1f}/s ({base[1] / b32:.2f}×) |")
        print(rows[-1], flush=True)
    return rows


def image_inputs(channels: int, size: int, batch: int) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0))}


def random_model(kind: str):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
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
    parser.add_argument("--models", default="resnet,digits_vit,vit_s,distilbert")
    parser.add_argument("--resnet-model", default=None, help="the demo's trained fp_model folder (else: train it here)")
    parser.add_argument("--seq-len", type=int, default=128, help="DistilBERT-size tokens per example")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}")
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}")
    header = ["| model | runtime | bytes (× FP32) | latency, batch 1 (× torch FP32) | throughput, batch 32 (× torch FP32) |",
              "| --- | --- | --- | --- | --- |"]
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
            runs = variants(model, w4, train, Path(tmp) / key, args.threads, 512)
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
        for key in ("vit_s", "distilbert"):
            if key not in chosen:
                continue
            model = random_model("vit" if key == "vit_s" else "bert")
            if key == "vit_s":
                batch1, batch32, w4 = image_inputs(3, 224, 1), image_inputs(3, 224, 32), W4_VIT
            else:
                g = torch.Generator().manual_seed(0)
                ids = torch.randint(1000, 30000, (32, args.seq_len), generator=g)
                batch32 = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
                batch1 = {k: v[:1] for k, v in batch32.items()}
                w4 = "w4"
            runs = variants(model, w4, calibration_set(batch32), Path(tmp) / key, args.threads, 32)
            table += speed_table(key, runs, batch1, batch32, args.min_time)
    print("\n" + "\n".join(table))
    for key, text in audits:
        print(f"\n### {key}: per group, simulated and deployed\n\n{text}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
