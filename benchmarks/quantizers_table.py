"""Every quantizer that runs on this CPU, audited on one model: the closing table of issue #22.

The model: the Adult BERT of ``recipes/adult_sex_race_bert.yaml`` (its FP training only; groups
sex × race). Not the demo Fashion-MNIST ResNet: every transformers quantization config converts
``nn.Linear`` only, and the ResNet's only Linear is its 320-weight classifier (its Conv2d blocks
hold 98 % of its weights), so TorchAoConfig/BitsAndBytesConfig/QuantoConfig would audit a model
that is still 98 % float. The BERT is Linear throughout (embeddings aside).

Rows: the FP model; hf_fairquant's presets on optimum-quanto and torchao; transformers'
quantization configs as recipes (built with ``from_pretrained(folder, quantization_config=...)``,
then saved and reloaded — a reloaded artifact that differs gets its own row); the libraries
applied directly (torch.ao dynamic int8, HQQ 4-bit). Per row: per-group accuracy, the largest
per-group drop with its paired bootstrap interval, flip rate vs FP, effective bits (nominal and
as stored), bytes (the saved artifact's files when the audit saved one, else the tensors in
memory), and forward throughput relative to FP32 — every model timed in this one process,
round-robin over the same batches, the median of the rounds.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/quantizers_table.py --out docs/results/quantizers_table.json
    python benchmarks/quantizers_table.py --render docs/results/quantizers_table.json

Run it alone on the machine (two torch processes on two cores slow each other 5-50x).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = ROOT / "recipes" / "adult_sex_race_bert.yaml"
#: (row name, recipe) audited through hf_fairquant's recipes; transformers configs by alias or mapping
RECIPES = [
    "w8a8", "w4a8", "w4", "w2a8",  # optimum-quanto (simulated, static a8)
    "w8a8@torchao", "w4@torchao",  # torchao through hf_fairquant's plans
    "torchao-int8", "torchao-int8-dynamic", "torchao-int4", "torchao-int2",  # TorchAoConfig
    "bnb-int8",  # BitsAndBytesConfig(load_in_8bit=True)
    # 4-bit: the classifier (64 → 2) is refused by bitsandbytes' CPU kernel (out_features % 32), kept float
    {"transformers": "bnb-nf4", "llm_int8_skip_modules": ["classifier"]},
    {"transformers": "bnb-fp4", "llm_int8_skip_modules": ["classifier"]},
    "quanto-int8", "quanto-int4",  # QuantoConfig (not serialisable: no round trip)
]
#: what does not run here, and why (each is refused before any work; the message is recorded)
REFUSED = ["hqq-int4", {"transformers": "TorchAoConfig", "quant_type": "Int4WeightOnlyConfig"}, "bnb-nf4"]


def build_fp(out: Path):
    """The recipe's FP BERT (trained once, then reused from ``out``), its splits, groups, tokenizer."""
    from transformers import set_seed

    from hf_fairquant.run import load_recipe
    from hf_fairquant.run.models import (
        build_model,
        class_names,
        load_pretrained,
        load_recipe_data,
        modality,
        resolve_task,
        train_fp_model,
    )

    recipe = load_recipe(RECIPE, output_dir=str(out))
    if (out / "config.json").is_file():
        model, splits, spec, tokenizer = load_pretrained(str(out), recipe.data)
        return model.eval(), splits, spec, tokenizer, recipe, "reused"
    splits, spec, tokenizer, _ = load_recipe_data(recipe.model, recipe.data)
    task = resolve_task(recipe.model, recipe.data)
    set_seed(recipe.training.seed)
    model = build_model(recipe.model, class_names(splits[recipe.data.train_split]), modality(recipe.data), task,
                        tokenizer=tokenizer)
    recipe.training.output_dir = str(out.parent / "checkpoints")
    started = time.perf_counter()
    model = train_fp_model(model, recipe.training, splits[recipe.data.train_split], processing_class=tokenizer).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model, splits, spec, tokenizer, recipe, f"trained here in {time.perf_counter() - started:.0f} s"


def direct_models(fp):
    """The libraries applied by hand: torch.ao dynamic int8 and HQQ 4-bit (group 64) on every Linear."""
    import torch

    models = {"torch.ao dynamic int8": torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp), {torch.nn.Linear},
                                                                              dtype=torch.qint8)}
    try:
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear
    except ImportError:
        return models
    hqq = copy.deepcopy(fp)
    for name, module in list(hqq.named_modules()):
        if type(module) is torch.nn.Linear:
            hqq.set_submodule(name, HQQLinear(module, BaseQuantizeConfig(nbits=4, group_size=64), compute_dtype=torch.float32,
                                              device="cpu"))
    models["hqq 4-bit (HQQLinear)"] = hqq
    return models


def throughput(models: dict, batches: list, rounds: int) -> dict[str, float]:
    """Examples per second of each model, timed round-robin over the same batches (median of rounds)."""
    import torch

    times: dict[str, list[float]] = {name: [] for name in models}
    n = sum(len(next(iter(b.values()))) for b in batches)
    with torch.inference_mode():
        for model in models.values():  # warm-up (first-call kernels, repacking)
            model(**batches[0])
        for _ in range(rounds):
            for name, model in models.items():
                started = time.perf_counter()
                for batch in batches:
                    model(**batch)
                times[name].append(time.perf_counter() - started)
    return {name: n / statistics.median(t) for name, t in times.items()}


def measure(args) -> dict:
    import torch
    from transformers import DataCollatorWithPadding

    import hf_fairquant
    from hf_fairquant import audit
    from hf_fairquant.errors import FairQuantError
    from hf_fairquant.quantization import parse_recipe, quantize, recipe_quantizer

    torch.set_num_threads(args.threads)
    fp, splits, spec, tokenizer, recipe, how = build_fp(Path(args.fp_dir))
    train, test = splits[recipe.data.train_split], splits[recipe.data.eval_split]
    refused = {}
    for r in REFUSED:
        try:
            parse_recipe(r).plan(fp)
        except FairQuantError as err:
            refused[str(parse_recipe(r))] = str(err)
    direct = direct_models(fp)
    started = time.perf_counter()
    report = audit(fp, test, RECIPES, spec, calibration_dataset=train, processing_class=tokenizer,
                   quantized_models=direct, n_boot=args.n_boot, calibration_size=recipe.audit.calibration_size,
                   seed=0, progress=False)
    audit_s = time.perf_counter() - started

    # the same models again, for timing side by side (quanto calibration is seeded: the same model)
    from hf_fairquant.inputs import GroupedInputs

    calibration = GroupedInputs(fp, train, spec, processing_class=tokenizer, split="calibration")
    models = {"FP": fp}
    for r in RECIPES:
        parsed = parse_recipe(r)
        source = fp if recipe_quantizer(parsed).builds_new_model else copy.deepcopy(fp)
        models[parsed.row_name] = quantize(source, parsed, calibration, group_spec=spec,
                                           calibration_size=recipe.audit.calibration_size, seed=0)
    models.update(direct)
    collate = DataCollatorWithPadding(tokenizer)
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in test.column_names]
    rows = test.select(range(args.speed_examples)).select_columns(columns)
    batches = []
    for i in range(0, len(rows), args.batch_size):
        batch = collate([rows[j] for j in range(i, min(i + args.batch_size, len(rows)))])
        batches.append({k: v for k, v in batch.items() if k in columns})
    speed = throughput(models, batches, args.rounds)

    out = []
    for r in [report.fp, *report.quantized]:
        m = r.metrics
        drops = m.get("group_accuracy_drop") or {}
        worst = max(drops, key=lambda g: drops[g]) if drops else None
        ci = (m.get("group_accuracy_drop_ci") or {}).get(worst) if worst else None
        base = r.name.removesuffix(" reloaded")
        out.append({
            "name": r.name, "quantization": r.quantization or "full precision",
            "group_accuracy": m["group_accuracy"], "accuracy": m["accuracy"],
            "worst_drop_group": worst, "worst_drop": drops.get(worst) if worst else None, "worst_drop_ci": ci,
            "flip_rate": m.get("flip_rate"), "effective_bits": r.effective_bits, "storage_bits": r.storage_bits,
            "size_bytes": r.size_bytes, "float_share": r.float_share,
            "bytes_are": ("saved artifact" if base in report.round_trips and report.round_trips[base].get("artifact_bytes")
                          else "tensors in memory"),
            "throughput": speed.get(r.name), "throughput_vs_fp32": (speed[r.name] / speed["FP"]) if r.name in speed else None,
        })
    return {
        "versions": {lib: _version(lib) for lib in ("torch", "transformers", "torchao", "bitsandbytes", "optimum.quanto", "hqq")},
        "hf_fairquant": hf_fairquant.__version__, "machine": platform.processor() or platform.machine(),
        "threads": args.threads, "fp_model": how, "eval_examples": len(test), "group_names": list(report.group_names),
        "group_counts": report.fp.metrics["group_count"], "n_boot": args.n_boot, "audit_s": round(audit_s, 1),
        "speed": {"examples": args.speed_examples, "batch_size": args.batch_size, "rounds": args.rounds},
        "round_trips": report.round_trips, "refused": refused, "rows": out,
    }


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version({"optimum.quanto": "optimum-quanto"}.get(name, name))
    except PackageNotFoundError:
        return None


def render(data: dict) -> str:
    short = {g: g.replace("Female", "F").replace("Male", "M").replace("Amer-Indian-Eskimo", "AIE")
             .replace("Asian-Pac-Islander", "API") for g in data["group_names"]}
    head = ["model", "bits (stored)", "bytes", "× FP32 speed", "overall", *short.values(),
            "largest group drop [95% CI]", "flip rate"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in data["rows"]:
        drop = "—" if r["worst_drop"] is None else (
            f"{r['worst_drop_group'] and short[r['worst_drop_group']]} {100 * r['worst_drop']:+.1f}"
            + (f" [{100 * r['worst_drop_ci'][0]:+.1f}, {100 * r['worst_drop_ci'][1]:+.1f}]" if r["worst_drop_ci"] else ""))
        speed = "—" if r["throughput_vs_fp32"] is None else f"{r['throughput_vs_fp32']:.2f}"
        bits = f"{r['effective_bits']:.2f}" + (f" ({r['storage_bits']:.2f})" if r["storage_bits"] else "")
        cells = [r["name"], bits, f"{r['size_bytes']:,}" + ("" if r["bytes_are"] == "saved artifact" else "*"), speed,
                 f"{100 * r['accuracy']:.1f}", *[("n/a" if r["group_accuracy"].get(g) is None else f"{100 * r['group_accuracy'][g]:.1f}")
                                                 for g in data["group_names"]],
                 drop, "—" if r["flip_rate"] is None else f"{100 * r['flip_rate']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"Adult BERT ({data['fp_model']}), {data['eval_examples']} test rows; groups sex × race "
        + ", ".join(f"{short[g]} {data['group_counts'][g]}" for g in data["group_names"]) + ".",
        f"Accuracy in %. Largest group drop: the group whose accuracy fell most, FP − quantized, points, with its paired "
        f"bootstrap interval ({data['n_boot']} resamples). Flip rate: % of predictions that changed vs FP. bits: nominal "
        "weight bits over the Linear weights (embeddings excluded); stored: with scales, zero points, absmax. bytes: the "
        "saved artifact's files; * = the tensors in memory (no artifact saved: presets are saved by save_quantized "
        "exactly, QuantoConfig and torch.ao/HQQ models are not serialisable by save_pretrained).",
        f"Speed: examples/s relative to FP32, {data['speed']['examples']} test rows in batches of {data['speed']['batch_size']}, "
        f"{data['threads']} thread(s), median of {data['speed']['rounds']} round-robin rounds in one process.",
    ]
    for name, rt in data["round_trips"].items():
        if rt.get("error"):
            notes.append(f"{name}: not saved ({rt['error'][:120]}).")
        elif not rt.get("identical"):
            notes.append(f"{name}: save → reload changes the model (flip rate {100 * rt['flip_rate']:.2f} % between the "
                         f"evaluated and the reloaded model): row '{rt['reloaded_row']}'.")
    for name, why in data["refused"].items():
        notes.append(f"Refused before any work: {why}")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "quantizers_table.json")
    parser.add_argument("--fp-dir", default=str(ROOT / "outputs" / "quantizers_table" / "fp_model"))
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--speed-examples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--render", type=Path, default=None, help="print the table of a saved JSON and exit")
    args = parser.parse_args()
    if args.render is not None:
        print(render(json.loads(args.render.read_text())))
        return
    data = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2, default=str))
    print(render(data))


if __name__ == "__main__":
    main()
