"""group_compute_metrics: a Trainer compute_metrics whose numbers are the group_disparity module's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from hf_fairquant.metrics import group_compute_metrics
from hf_fairquant.metrics import load_group_disparity


def eval_prediction(n: int = 60, n_classes: int = 3, seed: int = 0, tuple_predictions: bool = False):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, n_classes)).astype(np.float32)
    labels = rng.integers(0, n_classes, n)
    groups = rng.integers(0, 3, n)
    predictions = (logits, rng.normal(size=(n, 4))) if tuple_predictions else logits
    return EvalPrediction(predictions=predictions, label_ids=(labels, groups)), logits, labels, groups


def test_keys_and_values_match_the_metric(group_disparity):
    eval_pred, logits, labels, groups = eval_prediction()
    metrics = group_compute_metrics()(eval_pred)
    losses = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), reduction="none")
    expected = group_disparity.compute(
        predictions=logits.argmax(-1), references=labels, groups=groups, losses=losses.numpy()
    )

    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["accuracy"] == expected["accuracy"]
    for key in ("worst_group_accuracy", "accuracy_gap", "accuracy_ratio", "max_difference_to_overall"):
        assert metrics[key] == expected[key]
    for name in ("0", "1", "2"):
        assert metrics[f"group_accuracy/{name}"] == expected["group_accuracy"][name]
        assert metrics[f"group_error_rate/{name}"] == expected["group_error_rate"][name]
        assert metrics[f"group_count/{name}"] == float(expected["group_count"][name])
        assert metrics[f"group_mean_loss/{name}"] == pytest.approx(expected["group_mean_loss"][name], rel=1e-6)
    assert metrics["mean_loss"] == pytest.approx(expected["mean_loss"], rel=1e-6)
    assert "worst_group" not in metrics and not any(k.startswith("group_true_positive") for k in metrics)


def test_group_names_bootstrap_reference_and_tuple_predictions():
    eval_pred, logits, labels, groups = eval_prediction(tuple_predictions=True)
    reference = labels.copy()
    compute = group_compute_metrics(
        group_names=["young", "middle", "old"], n_boot=50, reference_predictions=reference, include_loss=False,
        min_group_size=10,
    )
    metrics = compute(eval_pred)
    assert {f"group_accuracy/{g}" for g in ("young", "middle", "old")} <= metrics.keys()
    assert {"accuracy_gap_ci_lo", "accuracy_gap_ci_hi", "group_accuracy_ci_lo/old", "group_accuracy_ci_hi/old"} <= (
        metrics.keys()
    )
    assert metrics["accuracy_gap_ci_lo"] <= metrics["accuracy_gap"] <= metrics["accuracy_gap_ci_hi"]
    assert metrics["reference_accuracy"] == 1.0
    assert metrics["group_flip_rate/young"] == 1.0 - metrics["group_accuracy/young"]
    assert "n_boot" not in metrics and "mean_loss" not in metrics
    # A mapping works as well, and the same call is reproducible.
    by_mapping = group_compute_metrics(
        group_names={0: "young", 1: "middle", 2: "old"}, n_boot=50, reference_predictions=reference, include_loss=False,
        min_group_size=10,
    )
    assert by_mapping(eval_pred) == metrics
    # McNemar keys flatten like the rest; a p-value per group, and the adjusted ones
    assert {"mcnemar_p_value", "group_mcnemar_p_adjusted/old", "group_newly_wrong/old"} <= metrics.keys()


def test_small_groups_lose_their_interval_keys_not_the_others():
    """The module's None (no interval for a group under min_group_size) is left out, not a crash."""
    eval_pred, logits, labels, groups = eval_prediction(tuple_predictions=True)
    metrics = group_compute_metrics(group_names=["young", "middle", "old"], n_boot=50, include_loss=False,
                                    reference_predictions=labels.copy())(eval_pred)
    counts = {g: metrics[f"group_count/{g}"] for g in ("young", "middle", "old")}
    small = [g for g, n in counts.items() if n < 30]
    assert small  # the fixture has a group under the default min_group_size of 30
    for g in counts:
        assert (f"group_accuracy_ci_lo/{g}" in metrics) == (g not in small)
    assert "accuracy_gap_ci_lo" not in metrics and "groups_too_small_for_interval" not in metrics
    assert all(isinstance(v, float) for v in metrics.values())


def test_class_id_predictions_are_used_as_they_are():
    eval_pred, logits, labels, groups = eval_prediction()
    from_ids = group_compute_metrics()(EvalPrediction(predictions=logits.argmax(-1), label_ids=(labels, groups)))
    from_logits = group_compute_metrics(include_loss=False)(eval_pred)
    assert from_ids == from_logits


def test_module_is_loaded_once():
    group_compute_metrics()
    group_compute_metrics(n_boot=3)
    assert load_group_disparity.cache_info().currsize == 1 and load_group_disparity.cache_info().misses == 1


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"n_boot": -5}, "n_boot"),
        ({"confidence_level": 2.0}, "confidence_level"),
        ({"group_names": {0: "a", 1: "a"}}, "unique"),
        ({"group_names": {"zero": "a"}}, "integer group codes"),
    ],
)
def test_bad_settings_fail_when_building(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        group_compute_metrics(**kwargs)


def test_bad_eval_predictions():
    eval_pred, logits, labels, groups = eval_prediction()
    compute = group_compute_metrics()
    with pytest.raises(ValueError, match="label_names=\\['labels', 'group'\\]"):
        compute(EvalPrediction(predictions=logits, label_ids=labels))
    with pytest.raises(ValueError, match=r"group codes \['2'\] have no entry in group_names"):
        group_compute_metrics(group_names=["a", "b"])(eval_pred)
    with pytest.raises(ValueError, match="groups=59"):
        compute(EvalPrediction(predictions=logits, label_ids=(labels, groups[:-1])))
    with pytest.raises(ValueError, match="references=59"):
        compute(EvalPrediction(predictions=logits, label_ids=(labels[:-1], groups)))
    with pytest.raises(ValueError, match="Empty input"):
        compute(EvalPrediction(predictions=logits[:0], label_ids=(labels[:0], groups[:0])))
    with pytest.raises(ValueError, match="group_names must be a mapping"):
        group_compute_metrics(group_names="abc")


class TinyClassifier(torch.nn.Module):
    """A linear classifier whose forward takes (and ignores) the group column, as the Trainer passes it."""

    def __init__(self, n_features: int = 4, n_classes: int = 3):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, n_classes)

    def forward(self, features, labels=None, group=None):
        logits = self.linear(features)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def test_inside_trainer_evaluate(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    rng = np.random.default_rng(0)
    n = 40
    data = Dataset.from_dict(
        {
            "features": rng.normal(size=(n, 4)).astype(np.float32),
            "labels": rng.integers(0, 3, n),
            "group": rng.integers(0, 2, n),
        }
    )
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=8, label_names=["labels", "group"],
        report_to=[], use_cpu=True,
    )
    torch.manual_seed(0)
    trainer = Trainer(
        model=TinyClassifier(), args=args, eval_dataset=data,
        compute_metrics=group_compute_metrics(group_names={0: "majority", 1: "minority"}),
    )
    metrics = trainer.evaluate()
    assert {"eval_accuracy", "eval_group_accuracy/majority", "eval_group_count/minority",
            "eval_worst_group_accuracy", "eval_accuracy_gap", "eval_group_mean_loss/minority"} <= metrics.keys()
    assert metrics["eval_group_count/majority"] + metrics["eval_group_count/minority"] == n
    # Per-example cross-entropy averages back to the Trainer's own eval loss (equal batches of 8).
    assert metrics["eval_mean_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)


def _string_group_data(n: int = 40):
    from datasets import Dataset

    rng = np.random.default_rng(1)
    return Dataset.from_dict({
        "features": rng.normal(size=(n, 4)).astype(np.float32),
        "labels": rng.integers(0, 3, n),
        "group": ["minority" if i % 4 == 0 else "majority" for i in range(n)],
    })


def test_string_groups_in_a_plain_trainer(tmp_path):
    from transformers import Trainer, TrainingArguments

    from hf_fairquant import GroupSpec

    data = _string_group_data()
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=8, report_to=[], use_cpu=True)
    torch.manual_seed(0)
    trainer = Trainer(
        model=TinyClassifier(), args=args, eval_dataset=data,
        compute_metrics=group_compute_metrics(group_spec=GroupSpec("group"), eval_dataset=data),
    )
    metrics = trainer.evaluate()
    assert metrics["eval_group_count/minority"] == 10 and metrics["eval_group_count/majority"] == 30
    assert {"eval_accuracy", "eval_group_accuracy/minority", "eval_worst_group_accuracy"} <= metrics.keys()


def test_missing_group_column_is_an_error_not_an_empty_dict(tmp_path):
    from transformers import Trainer, TrainingArguments

    data = _string_group_data().remove_columns("group")
    with pytest.raises(ValueError, match=r"group column\(s\) \['group'\] not found"):
        group_compute_metrics(group_spec="group", eval_dataset=data)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=8, report_to=[], use_cpu=True)
    trainer = Trainer(model=TinyClassifier(), args=args, eval_dataset=data, compute_metrics=group_compute_metrics())
    with pytest.raises(ValueError, match="the Trainer passed no group column.*group_spec=GroupSpec"):
        trainer.evaluate()
