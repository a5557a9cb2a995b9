"""Run by test_multiprocess.py under torchrun (2 CPU processes, gloo): a short QAT run with
group-balanced sampling and DRO weights that records, per rank and step, the row indices it
trained on, then saves the model once."""

import json
import os
import sys

import numpy as np
import torch

from hf_fairquant import FairQuantTrainer, FairQuantTrainingArguments
from tests.conftest import image_dataset, tiny_resnet

ROWS, BATCH, STEPS = 160, 8, 6


class RecordingTrainer(FairQuantTrainer):
    """Keeps an ``idx`` column through ``remove_unused_columns`` and logs it per step."""

    seen: list

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns.append("idx")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        self.seen.append(inputs.pop("idx").tolist())
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def main(out: str) -> None:
    train = image_dataset(n=ROWS, groups=("a",) * 9 + ("b",)).add_column("idx", list(range(ROWS)))
    args = FairQuantTrainingArguments(
        output_dir=out, report_to="none", use_cpu=True, ddp_backend="gloo", per_device_train_batch_size=BATCH,
        max_steps=STEPS, save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
        group_sampling="group_balanced", group_weighting="dro", dro_step_size=0.5, quantization="w4a8",
    )
    trainer = RecordingTrainer(model=tiny_resnet(), args=args, train_dataset=train)
    trainer.seen = []
    trainer.train()
    trainer.save_model(os.path.join(out, "final"))
    rank = trainer.args.process_index
    record = {"rank": rank, "world_size": trainer.args.world_size, "seen": trainer.seen, "q": trainer.loss_weighting.q.tolist()}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump(record, fh)


if __name__ == "__main__":
    torch.set_num_threads(1)
    np.random.seed(0)
    main(sys.argv[1])
