"""The input layer (ModelInputs batches, GroupedInputs adds references and groups): data as Hugging
Face users prepare it reaches every forward pass."""

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_fairquant import allocate_bits, audit
from hf_fairquant.batching import iterate_batches
from hf_fairquant.inputs import GroupedInputs
from hf_fairquant.data import check_image_size
from hf_fairquant.errors import FairQuantError
from hf_fairquant.quantization import calibration_batches
from tests.conftest import (
    image_dataset, pil_dataset, raw_text_dataset, tiny_distilbert, tiny_image_processor, tiny_resnet, tiny_tokenizer,
)


@pytest.fixture(scope="module")
def reference():
    return image_dataset(n=40, seed=3)  # Array3D pixel_values, int labels


def _variants(reference):
    """The same rows as a user might hold them: lists (map output), numpy, torch, a transform, `label`."""
    x = np.asarray(reference.with_format("numpy")["pixel_values"][:])
    y = np.asarray(reference.with_format("numpy")["labels"][:])
    groups = reference["group"][:]
    lists = Dataset.from_dict({"pixel_values": x.tolist(), "label": y.tolist(), "group": groups})  # List feature
    raw = Dataset.from_dict({"img": x.reshape(len(x), -1).tolist(), "label": y.tolist(), "group": groups})

    def transform(batch):
        return {"pixel_values": [np.asarray(v, dtype=np.float32).reshape(1, 8, 8) for v in batch["img"]],
                "label": batch["label"]}

    return {
        "array3d": reference,
        "list+label": lists,
        "numpy": Dataset.from_dict({"pixel_values": x, "labels": y, "group": groups}),
        "torch": reference.with_format("torch"),
        "with_transform": raw.with_transform(transform),
        "set_transform+select": _set_transform(raw, transform).select(range(len(raw))),
        "map": raw.map(transform, batched=True, remove_columns=["img"]),
    }


def _set_transform(ds, transform):
    ds = ds.select(range(len(ds)))
    ds.set_transform(transform)
    return ds


def test_every_feature_type_gives_the_same_batches(reference):
    model = tiny_resnet()
    want = [(i["pixel_values"], y) for i, y in GroupedInputs(model, reference).batches(16)]
    for name, ds in _variants(reference).items():
        check_image_size(model.config, ds)  # was: 'List' object has no attribute 'shape'
        got = list(GroupedInputs(model, ds).batches(16))
        assert len(got) == len(want), name
        for (inputs, y), (x_ref, y_ref) in zip(got, want):
            assert list(inputs) == ["pixel_values"], name
            assert torch.equal(inputs["pixel_values"].float(), x_ref) and torch.equal(y, y_ref), name


def test_image_size_is_read_from_the_transformed_example(reference):
    small = _variants(reference)["with_transform"]
    with pytest.raises(FairQuantError, match="expects 16×16 images.*data has 8×8"):
        check_image_size(tiny_resnet().config.__class__(num_channels=1, image_size=16), small)


def test_audit_with_transform_label_column_and_calibration(reference):
    variants = _variants(reference)
    model = tiny_resnet()
    want = audit(model, reference, ["w8a8"], "group", calibration_dataset=reference, n_boot=0, progress=False)
    got = audit(model, variants["with_transform"], ["w8a8"], "group", calibration_dataset=variants["list+label"],
                n_boot=0, progress=False)
    assert got.fp.metrics == want.fp.metrics
    assert got.quantized[0].metrics == want.quantized[0].metrics


def test_allocation_on_a_transformed_dataset(reference):
    alloc = allocate_bits(tiny_resnet(), _variants(reference)["with_transform"], "group", budget=4.0, calibration_size=32)
    assert set(alloc.bits.values()) <= {2, 4, 8} and alloc.measured_accuracy


def test_explain_on_a_transformed_dataset(reference):
    from hf_fairquant import explain

    ex = explain(tiny_resnet(), "w4", _variants(reference)["with_transform"], "group", examples_per_group=8,
                 max_iterations=3, probes=2, tol=1e-2, progress=False)
    assert set(ex.group_names) == {"a", "b"} and ex.layers


def test_unpadded_text_needs_a_collator_and_pads_dynamically():
    tokenizer = tiny_tokenizer()
    data = raw_text_dataset().map(lambda b: tokenizer(b["text"], truncation=True), batched=True, remove_columns=["text"])
    model = tiny_distilbert()
    with pytest.raises(FairQuantError, match="column 'input_ids' has rows of different shapes.*DataCollatorWithPadding"):
        list(iterate_batches(model, data, 8))
    batches = list(iterate_batches(model, data, 8, processing_class=tokenizer))
    # padded per batch to its longest row, not to the tokenizer's 64
    assert all(b["input_ids"].shape[1] == b["attention_mask"].sum(1).max() < 64 for b in batches)
    assert all(b["attention_mask"].sum() < b["attention_mask"].numel() for b in batches)
    calibration = calibration_batches(model, data, size=16, batch_size=8, processing_class=tokenizer)
    assert sum(len(b["input_ids"]) for b in calibration) == 16
    report = audit(model, data, ["w8a8"], "group", calibration_dataset=data, n_boot=0, progress=False,
                   processing_class=tokenizer)
    assert report.fp.metrics["group_count"] == {"x": 16, "y": 8}


def test_pil_images_need_an_image_processor():
    data = pil_dataset(size=10)
    model = tiny_resnet()
    with pytest.raises(FairQuantError, match="column 'image' holds PIL images.*processing_class=AutoImageProcessor"):
        audit(model, data, [], "group", n_boot=0, progress=False)
    inputs = GroupedInputs(model, data, processing_class=tiny_image_processor(8))
    batch, labels = next(inputs.batches(4))
    assert batch["pixel_values"].shape == (4, 1, 8, 8) and labels.tolist() == data["label"][:4]
    report = audit(model, data, ["w4"], "group", n_boot=0, progress=False, processing_class=tiny_image_processor(8))
    assert report.fp.metrics["group_count"] == {"a": 16, "b": 16}


def test_class_name_labels_map_through_label2id(reference):
    model = tiny_resnet(num_labels=3)
    model.config.label2id = {"cat": 0, "dog": 1, "fox": 2}
    names = ["cat", "dog", "fox"]
    ds = Dataset.from_dict({"pixel_values": np.zeros((6, 1, 8, 8), np.float32), "label": names * 2,
                            "group": ["a", "b"] * 3})
    assert GroupedInputs(model, ds).references.tolist() == [0, 1, 2, 0, 1, 2]
    bad = ds.remove_columns("label").add_column("label", ["cat", "emu"] * 3)
    with pytest.raises(FairQuantError, match=r"label column 'label'.*\['emu'\].*allowed names: \['cat', 'dog', 'fox'\]"):
        audit(model, bad, [], "group", n_boot=0, progress=False)


def test_eval_only_groups_are_audited_and_reported(reference):
    calibration = reference.filter(lambda r: r["group"] == "a")
    report = audit(tiny_resnet(), reference, ["w8a8"], "group", calibration_dataset=calibration, n_boot=0, progress=False)
    assert report.settings["eval_only_groups"] == ["b"]
    assert set(report.quantized[0].metrics["group_accuracy"]) == {"a", "b"}
    assert "Eval-only group(s), with no calibration/training example: b" in report.to_markdown()


def test_grouped_inputs_check_everything_once_and_select_keeps_rows(reference):
    model = tiny_resnet()
    inputs = GroupedInputs(model, reference, "group", split="eval")
    assert inputs.task.name == "classification" and len(inputs) == len(reference)
    rows = [3, 1, 7]
    subset = inputs.select(rows)
    assert subset.references.tolist() == inputs.references[rows].tolist()
    assert subset.codes.tolist() == inputs.codes[rows].tolist()
    (batch, targets), = list(subset.batches(8))
    assert torch.equal(batch["pixel_values"], reference.with_format("torch")["pixel_values"][rows])
    with pytest.raises(FairQuantError, match=r"DatasetDict of splits \['eval'\]: pass one split"):
        from datasets import DatasetDict

        GroupedInputs(model, DatasetDict({"eval": reference}))


def test_a_one_logit_model_and_a_label_without_a_logit_are_refused(reference):
    from transformers import ResNetConfig, ResNetForImageClassification

    one = ResNetForImageClassification(ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8], depths=[1],
                                                    num_labels=1))
    with pytest.raises(FairQuantError, match="num_labels=1: a classifier needs at least 2 classes"):
        GroupedInputs(one, reference)
