"""Uniform vs group-blind (mean) vs worst-group bit allocation, at 3, 4 and 5 mean weight bits.

Trains the demo's tiny ResNet on long-tailed Fashion-MNIST (real data, Debian's files; the
training section of recipes/fashion_mnist_lt_resnet.yaml), allocates weight bits per layer
with :func:`hf_fairquant.allocate_bits` on a group-stratified subset of the *training* data,
then PTQs each recipe and evaluates on the balanced test split. With ``--qat-epochs > 0``
each recipe is also fine-tuned with FairQuantTrainer (plain QAT: no group sampling or
weighting, so only the bit allocation differs) and evaluated again.

The ResNet's layers differ a lot in size, so candidates {2, 4, 8} give no uniform width at
3 or 5 mean bits: the "uniform" row uses the widest uniform width within the budget
(marked "≤"), which spends less than the budget.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/allocation.py [--budgets 3 4 5] [--qat-epochs 1]
        [--activations none|8] [--sensitivity measured|hessian]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import numpy as np
import torch

from hf_fairquant import (
    FairQuantTrainer,
    FairQuantTrainingArguments,
    QuantRecipe,
    allocate_bits,
    quantize,
)
from hf_fairquant.audit import predict
from hf_fairquant.data import load_grouped_dataset
from hf_fairquant.metrics import load_group_disparity
from hf_fairquant.run import build_model, load_recipe, train_fp_model
from hf_fairquant.quantization import effective_bits

CANDIDATES = (2, 4, 8)


def uniform_recipe(budget: float, activations: int | None) -> tuple[QuantRecipe, str]:
    """The widest uniform width within the budget; its label says if it is below the budget."""
    bits = max(b for b in CANDIDATES if b <= budget)
    name = f"w{bits}" + (f"a{activations}" if activations else "")
    return QuantRecipe(bits, activations, name=name), ("uniform " + name + ("" if bits == budget else f" (≤{budget:g})"))


def evaluate(model: torch.nn.Module, test, groups: list[str], references: np.ndarray) -> dict:
    outputs = predict(model.eval(), test)
    preds, losses = outputs.predictions, outputs.losses
    return load_group_disparity().compute(predictions=preds, losses=losses, references=references, groups=groups, n_boot=0)


def qat(fp_model: torch.nn.Module, recipe: QuantRecipe, train, epochs: float, seed: int) -> torch.nn.Module:
    with tempfile.TemporaryDirectory() as out:
        args = FairQuantTrainingArguments(
            output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=128, learning_rate=1e-3,
            lr_scheduler_type="cosine", report_to="none", use_cpu=True, save_strategy="no",
            logging_strategy="no", disable_tqdm=True, seed=seed, quantization=recipe,
        )
        trainer = FairQuantTrainer(model=copy.deepcopy(fp_model), args=args, train_dataset=train)
        trainer.train()
        return trainer.model


def row(budget: str, method: str, bits: float, metrics: dict, names: list[str]) -> list[str]:
    acc = metrics["group_accuracy"]
    return [budget, method, f"{bits:.2f}", f"{100 * metrics['accuracy']:.1f}"] + [f"{100 * acc[g]:.1f}" for g in names] + [
        f"{metrics['worst_group']} {100 * metrics['worst_group_accuracy']:.1f}", f"{100 * metrics['accuracy_gap']:.1f}"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/fashion_mnist_lt_resnet.yaml")
    parser.add_argument("--budgets", type=float, nargs="+", default=[3.0, 4.0, 5.0])
    parser.add_argument("--epochs", type=float, default=None, help="FP training epochs (default: the recipe's)")
    parser.add_argument("--qat-epochs", type=float, default=0.0, help="QAT epochs per recipe after PTQ (0: PTQ only)")
    parser.add_argument("--activations", choices=["none", "8"], default="none")
    parser.add_argument("--calibration-size", type=int, default=512)
    parser.add_argument("--sensitivity", choices=["measured", "hessian"], default="measured")
    args = parser.parse_args()
    activations = None if args.activations == "none" else 8
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        run = load_recipe(args.recipe, output_dir=out)
        if args.epochs is not None:
            run.training.num_train_epochs = args.epochs
        data, spec = load_grouped_dataset(run.data)
        train, test = data[run.data.train_split], data[run.data.eval_split]
        names_cls = list(train.features["labels"].names)
        fp = train_fp_model(build_model(run.model, names_cls), run.training, train).eval()
    seed = run.training.seed
    groups = spec.group_names(test)
    references = np.asarray(test.with_format("numpy")["labels"][:])
    names = spec.names
    head = ["budget", "method", "eff. bits", "overall"] + names + ["worst group", "gap"]
    ptq_rows = [head, ["---"] * len(head), row("—", "FP", effective_bits(fp), evaluate(fp, test, groups, references), names)]
    qat_rows = [head, ["---"] * len(head)]
    allocations = []
    for budget in args.budgets:
        uniform, uniform_name = uniform_recipe(budget, activations)
        entries = [(uniform_name, uniform)]
        for objective in ("mean", "worst_group"):
            alloc = allocate_bits(fp, train, spec, CANDIDATES, budget, objective, args.sensitivity, activations,
                                  calibration_size=args.calibration_size, seed=seed)
            allocations.append(alloc)
            entries.append((f"alloc {objective}", alloc.recipe))
        for method, recipe in entries:
            qmodel = quantize(copy.deepcopy(fp), recipe, train, group_spec=spec,
                              calibration_size=args.calibration_size, seed=seed)
            ptq_rows.append(row(f"{budget:g}", method, effective_bits(qmodel), evaluate(qmodel, test, groups, references), names))
            if args.qat_epochs > 0:
                qmodel = qat(fp, recipe, train, args.qat_epochs, seed)
                qat_rows.append(row(f"{budget:g}", method, effective_bits(qmodel), evaluate(qmodel, test, groups, references), names))

    counts = spec.counts(data)
    print(f"long-tailed Fashion-MNIST, groups by {spec.name}: {counts}; candidates {list(CANDIDATES)}, "
          f"activations {args.activations}, {args.sensitivity} sensitivity, allocation on {args.calibration_size} stratified training examples")
    print("\n## PTQ (test split, accuracy %)\n")
    print("\n".join("| " + " | ".join(r) + " |" for r in ptq_rows))
    if args.qat_epochs > 0:
        print(f"\n## after {args.qat_epochs:g} epoch(s) of QAT with FairQuantTrainer (plain: no group sampling/weighting)\n")
        print("\n".join("| " + " | ".join(r) + " |" for r in qat_rows))
    print("\n## chosen bits per layer\n")
    layer_names = [layer.name for layer in allocations[0].layers]
    params = [layer.params for layer in allocations[0].layers]
    table = [["layer", "params"] + [f"{a.objective} @{a.budget:g}" for a in allocations]]
    table.append(["---"] * len(table[0]))
    for i, (name, p) in enumerate(zip(layer_names, params)):
        table.append([name, str(p)] + [str(a.layers[i].bits) for a in allocations])
    print("\n".join("| " + " | ".join(r) + " |" for r in table))
    print("\n## predicted vs measured loss increase on the allocation subset (per group)\n")
    for a in allocations:
        print(f"{a.objective:>11} @{a.budget:g} (eff. {a.effective_bits:.2f}): "
              + "; ".join(f"{g} predicted {a.predicted_loss_increase[g]:+.3f} measured {a.measured_loss_increase[g]:+.3f}"
                          for g in names))
    print(f"\nwall time {time.perf_counter() - started:.0f} s, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
