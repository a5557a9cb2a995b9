"""FairQuantTrainer takes data the way the HF examples prepare it."""

import numpy as np
import pytest
from datasets import Dataset
from transformers import DataCollatorWithPadding

from hf_fairquant import FairQuantTrainer
from hf_fairquant.errors import FairQuantError
from tests.conftest import (
    image_dataset, pil_dataset, raw_text_dataset, tiny_distilbert, tiny_image_processor, tiny_resnet, tiny_tokenizer,
)
from tests.training.test_trainer import make_args


def _transformed(n: int = 48, seed: int = 0):
    ref = image_dataset(n=n, seed=seed)
    x = np.asarray(ref.with_format("numpy")["pixel_values"][:]).reshape(n, -1)
    raw = Dataset.from_dict({"img": x.tolist(), "label": ref["labels"][:], "group": ref["group"][:]})
    return raw.with_transform(
        lambda b: {"pixel_values": [np.asarray(v, np.float32).reshape(1, 8, 8) for v in b["img"]], "label": b["label"]}
    )


def test_with_transform_and_label_column_under_qat(tmp_path):
    args = make_args(tmp_path, max_steps=2, quantization="w4a8", calibration_size=16, group_weighting="dro")
    trainer = FairQuantTrainer(model=tiny_resnet(), args=args, train_dataset=_transformed(), eval_dataset=_transformed(seed=1))
    trainer.train()
    metrics = trainer.evaluate()
    assert {"eval_group_accuracy/a", "eval_group_accuracy/b"} <= set(metrics)
    batch = next(iter(trainer.get_train_dataloader()))
    assert sorted(batch) == ["group", "labels", "pixel_values"]


def test_unpadded_text_with_data_collator_in_calibration(tmp_path):
    tokenizer = tiny_tokenizer()
    data = raw_text_dataset().map(lambda b: tokenizer(b["text"], truncation=True), batched=True, remove_columns=["text"])
    args = make_args(tmp_path, max_steps=2, quantization="w8a8", calibration_size=16, per_device_train_batch_size=8)
    trainer = FairQuantTrainer(  # was: 'list' object has no attribute 'to' in calibration
        model=tiny_distilbert(), args=args, train_dataset=data, eval_dataset=data,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    trainer.train()
    assert "eval_worst_group_accuracy" in trainer.evaluate()


def test_pil_images_with_w4(tmp_path):
    data = pil_dataset(size=10)
    with pytest.raises(FairQuantError, match="column 'image' holds PIL images"):
        FairQuantTrainer(model=tiny_resnet(), args=make_args(tmp_path, quantization="w4"), train_dataset=data)
    trainer = FairQuantTrainer(  # was: 'NoneType' object has no attribute 'dtype' in the forward
        model=tiny_resnet(), args=make_args(tmp_path, max_steps=2, quantization="w4"), train_dataset=data,
        eval_dataset=data, processing_class=tiny_image_processor(8),
    )
    trainer.train()
    assert trainer.evaluate()["eval_group_count/a"] == 16


def test_float_labels_are_cast(tmp_path):
    ref = image_dataset(n=32)
    floats = ref.remove_columns("labels").add_column("label", [float(v) for v in ref["labels"][:]])
    trainer = FairQuantTrainer(model=tiny_resnet(), args=make_args(tmp_path, max_steps=1), train_dataset=floats)
    batch = next(iter(trainer.get_train_dataloader()))
    assert str(batch["labels"].dtype) == "torch.int64"
    trainer.train()
