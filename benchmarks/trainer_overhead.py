"""Step time of FairQuantTrainer vs a plain transformers.Trainer, same QAT recipe, same data.

Both train the demo's tiny ResNet on long-tailed Fashion-MNIST (real data, Debian's files)
with the same batch size and the same optimum-quanto QAT modules (the plain Trainer gets a
model prepared by hand: apply_plan + calibrate). FairQuantTrainer adds group-balanced
sampling, Group-DRO loss weights and activation-range tracking. Runs alternate (A B A B …)
so drift hits both; the figure is the ratio of median step times.

    python benchmarks/trainer_overhead.py [--steps 60] [--repeats 3] [--recipe w4a8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_fairquant import FairQuantTrainer, FairQuantTrainingArguments, GroupSpec, QuantRecipe
from hf_fairquant.data import DataConfig, load_grouped_dataset
from hf_fairquant.run import ModelSection, build_model
from hf_fairquant.quantization import apply_plan, calibrate, calibration_batches

RESNET = dict(model_type="resnet", num_channels=1, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
              layer_type="basic", downsample_in_first_stage=False)


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def common_args(out: str, steps: int, batch: int) -> dict:
    return dict(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=3e-3,
                report_to="none", use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0)


def model(names: list[str]) -> torch.nn.Module:
    return build_model(ModelSection(config=dict(RESNET)), names)


def plain_run(train, names, recipe, steps, batch, spec) -> list[float]:
    m = model(names)
    batches = calibration_batches(m, train, 512, spec, batch_size=batch, seed=0)
    apply_plan(m, recipe.plan(m))
    calibrate(m, batches)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(**common_args(out, steps, batch))
        Trainer(model=m, args=args, train_dataset=train.remove_columns("group").with_format("torch"),
                callbacks=[timer]).train()
    return timer.times


def fair_run(train, names, recipe, steps, batch) -> list[float]:
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = FairQuantTrainingArguments(
            **common_args(out, steps, batch), quantization=recipe, group_sampling="group_balanced",
            group_weighting="dro",
        )
        FairQuantTrainer(model=model(names), args=args, train_dataset=train, callbacks=[timer]).train()
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--recipe", default="w4a8")
    args = parser.parse_args()

    data, spec = load_grouped_dataset(DataConfig(long_tail_classes=["pullover", "coat", "sandal", "shirt", "bag"]))
    train = data["train"]
    names = list(train.features["labels"].names)
    recipe = QuantRecipe.parse(args.recipe)
    warm = min(10, args.steps // 4)  # first steps pay for allocation and the dataloader start
    plain, fair = [], []
    for _ in range(args.repeats):
        plain += plain_run(train, names, recipe, args.steps, args.batch_size, GroupSpec("group"))[warm:]
        fair += fair_run(train, names, recipe, args.steps, args.batch_size)[warm:]
    p, f = statistics.median(plain), statistics.median(fair)
    print(f"recipe {recipe}, batch {args.batch_size}, {len(plain)} timed steps each, torch threads {torch.get_num_threads()}")
    print(f"plain Trainer + QAT        median step {1000 * p:.1f} ms")
    print(f"FairQuantTrainer (+balanced sampling, DRO, range tracking) median step {1000 * f:.1f} ms")
    print(f"ratio FairQuantTrainer / Trainer = {f / p:.3f}")


if __name__ == "__main__":
    main()
