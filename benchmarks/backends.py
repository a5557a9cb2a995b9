"""Same recipe, two backends, side by side: optimum-quanto vs torchao on two tiny ViTs.

Models (real data, trained here, seeded): the digits ViT of ``recipes/digits_vit.yaml`` (its
data, model and training sections) and the long-tailed Fashion-MNIST ViT of
``benchmarks/reproduce.py`` (its ``VIT_CONFIG`` / ``VIT_TRAINING``, on the demo recipe's data).
For W8A8, W4, W4A8 and W2A8 — every Linear quantized, the patch embedding (a Conv2d torchao
cannot quantize) float for both backends — it prints per-group accuracy under each backend,
the flip rate between the two backends' predictions (and each vs FP), saved bytes / FP32
bytes, and load time as a ratio to loading the FP folder (median of 5 loads; torchao also with
plain ``from_pretrained``). quanto's a8 is static (calibrated on 512 group-stratified training
images), torchao's dynamic (per token).

    python benchmarks/backends.py [--fmnist-epochs 8] [--digits-epochs 15] [--output docs/results/backends.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from transformers import AutoModelForImageClassification  # noqa: E402

from hf_fairquant import GroupSpec, QuantRecipe, load_quantized, quantize, save_quantized  # noqa: E402
from hf_fairquant.audit import predict  # noqa: E402
from hf_fairquant.data import load_grouped_dataset  # noqa: E402
from hf_fairquant.run import ModelSection, build_model, load_recipe, train_fp_model
from hf_fairquant.run.models import class_names  # noqa: E402

PRESETS = ("w8a8", "w4", "w4a8", "w2a8")
BACKENDS = ("quanto", "torchao")
EXCLUDE = ["vit.embeddings.*"]  # the patch embedding is a Conv2d: float under both backends
CALIBRATION = 512


def fmnist_vit() -> tuple[dict, dict]:
    from reproduce import VIT_CONFIG, VIT_TRAINING  # the demo's long-tailed Fashion-MNIST ViT

    return dict(VIT_CONFIG), dict(VIT_TRAINING)


def train(recipe_path: Path, config: dict | None, training: dict, out: Path):
    recipe = load_recipe(recipe_path, output_dir=str(out))
    data, spec = load_grouped_dataset(recipe.data)
    train_split, test = data[recipe.data.train_split], data[recipe.data.eval_split]
    section = ModelSection(config=config) if config is not None else recipe.model
    torch.manual_seed(0)
    model = build_model(section, class_names(train_split))
    args = dataclasses.replace(recipe.training, output_dir=str(out / "checkpoints"), report_to="none", save_strategy="no",
                               logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=0, **training)
    started = time.perf_counter()
    model = train_fp_model(model, args, train_split).eval()
    return model, train_split, test, spec, time.perf_counter() - started


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix == ".safetensors")


def median_load_s(load, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        load()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def compare(name: str, model, train_split, test, spec: GroupSpec, work: Path) -> dict:
    groups = np.asarray(spec.group_names(test))
    labels = np.asarray(test.with_format("numpy")["labels"][:])
    fp_preds = predict(model, test).predictions
    fp_dir = work / f"{name}_fp"
    model.save_pretrained(fp_dir)
    fp_bytes, fp_load = folder_bytes(fp_dir), median_load_s(lambda: AutoModelForImageClassification.from_pretrained(fp_dir))

    def accuracy(preds):
        return {g: float(np.mean(preds[groups == g] == labels[groups == g])) for g in spec.names} | {
            "overall": float(np.mean(preds == labels))}

    rows = {"FP": {"accuracy": accuracy(fp_preds)}}
    for preset in PRESETS:
        preds = {}
        for backend in BACKENDS:
            recipe = QuantRecipe.parse({"preset": preset, "exclude": EXCLUDE, "backend": backend})
            q = quantize(copy.deepcopy(model), recipe, train_split, group_spec=spec, calibration_size=CALIBRATION)
            preds[backend] = predict(q, test).predictions
            folder = work / f"{name}_{preset}_{backend}"
            save_quantized(q, folder, recipe=recipe)
            row = {
                "accuracy": accuracy(preds[backend]),
                "flip_vs_fp": float(np.mean(preds[backend] != fp_preds)),
                "bytes_ratio": folder_bytes(folder) / fp_bytes,
                "load_ratio": median_load_s(lambda: load_quantized(folder)) / fp_load,
            }
            if backend == "torchao":
                row["plain_load_ratio"] = median_load_s(lambda: AutoModelForImageClassification.from_pretrained(folder)) / fp_load
            rows[f"{preset.upper()} {backend}"] = row
        rows[f"{preset.upper()} quanto"]["flip_between_backends"] = float(np.mean(preds["quanto"] != preds["torchao"]))
    return {"groups": list(spec.names), "test_counts": {g: int((groups == g).sum()) for g in spec.names},
            "fp_load_s": fp_load, "fp_bytes": fp_bytes, "rows": rows}


def table(name: str, result: dict) -> str:
    groups = result["groups"]
    head = ["model", "recipe", "backend", "overall", *groups, "flip vs FP", "flip quanto↔torchao", "bytes / FP32",
            "load / FP load"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for key, row in result["rows"].items():
        recipe, _, backend = key.partition(" ")
        acc = row["accuracy"]
        between = result["rows"].get(f"{recipe} quanto", {}).get("flip_between_backends")
        load = "—" if "load_ratio" not in row else f"{row['load_ratio']:.2f}" + (
            f" (plain {row['plain_load_ratio']:.2f})" if "plain_load_ratio" in row else "")
        lines.append("| " + " | ".join([
            name, recipe, backend or "—", f"{100 * acc['overall']:.1f}", *[f"{100 * acc[g]:.1f}" for g in groups],
            "—" if "flip_vs_fp" not in row else f"{100 * row['flip_vs_fp']:.1f}",
            "—" if between is None else f"{100 * between:.1f}",
            "—" if "bytes_ratio" not in row else f"{row['bytes_ratio']:.3f}", load,
        ]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fmnist-epochs", type=float, default=None, help="default: reproduce.py's VIT_TRAINING")
    parser.add_argument("--digits-epochs", type=float, default=None, help="default: recipes/digits_vit.yaml's")
    parser.add_argument("--output", type=Path, default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config, training = fmnist_vit()
        if args.fmnist_epochs is not None:
            training["num_train_epochs"] = args.fmnist_epochs
        cases = [
            ("digits ViT", ROOT / "recipes" / "digits_vit.yaml", None,
             {} if args.digits_epochs is None else {"num_train_epochs": args.digits_epochs}),
            ("Fashion-MNIST-LT ViT", ROOT / "recipes" / "fashion_mnist_lt_resnet.yaml", config, training),
        ]
        for name, recipe_path, model_config, overrides in cases:
            model, train_split, test, spec, seconds = train(recipe_path, model_config, overrides, work / name.replace(" ", "_"))
            print(f"{name}: trained in {seconds:.0f} s", flush=True)
            results[name] = compare(name.replace(" ", "_"), model, train_split, test, spec, work)
            results[name]["train_s"] = round(seconds, 1)
            print(table(name, results[name]), flush=True)
    print(f"\nwall time {time.perf_counter() - started:.0f} s "
          f"(torch {torch.__version__}, {torch.get_num_threads()} thread(s))")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
