"""Card metadata holds Hub ids only: never a local path in base_model or the model-index dataset."""

import pytest

from hf_fairquant.audit import AuditReport, ModelResult
from hf_fairquant.cards import dataset_hub_id, eval_results, hub_id
from hf_fairquant.results import DataInfo, ModelInfo, Published, RunResult


@pytest.mark.parametrize("value, expected", [
    ("user/model", "user/model"), ("bert-base-uncased", "bert-base-uncased"), ("user/Model-2.5", "user/Model-2.5"),
    ("/home/me/models/vit", None), ("./out/fp_model", None), ("~/m", None), ("a/b/c", None), ("C:\\m", None),
    ("", None), (None, None),
])
def test_hub_id(value, expected):
    assert hub_id(value) == expected


def test_an_existing_local_folder_is_not_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "fp_model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert hub_id("fp_model") is None


def _results(source: str, dataset_id: str | None = None) -> RunResult:
    metrics = {"accuracy": 0.8, "accuracy_gap": 0.1, "group_accuracy": {"a": 0.85, "b": 0.75},
               "group_accuracy_drop": {"a": 0.0, "b": 0.05}}
    audit = AuditReport(["group"], ["a", "b"], ModelResult("FP", 32.0, 100, metrics), [ModelResult("Q", 4.0, 20, metrics)])
    return RunResult(
        command="hf-fairquant run r.yaml", hf_fairquant_version="0",
        model=ModelInfo(None, "vit", 10, "classification", "image-classification", "AutoModelForImageClassification", True),
        data=DataInfo(source, "train", "test", ["group"], ["a", "b"], {"train": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}}),
        card={"dataset_id": dataset_id, "dataset_name": None}, audit=audit,
        published=Published("Q", "quanto", 4.0, 20, 100, {}),
    )


@pytest.mark.parametrize("source, dataset_id, expected_type", [
    ("/data/me/bios_local", None, "bios_local"),       # a local folder: its name, not its path
    ("/data/me/bios_local", "LabHC/bias_in_bios", "LabHC/bias_in_bios"),
    ("fashion_mnist", None, "zalando-datasets/fashion_mnist"),
    ("digits", None, "digits"),
    ("user/grouped", None, "user/grouped"),
])
def test_model_index_dataset_type_is_never_a_path(source, dataset_id, expected_type):
    results = _results(source, dataset_id)
    assert {r.dataset_type for r in eval_results(results)} == {expected_type}
    assert all("/data/me" not in r.dataset_name for r in eval_results(results))
    assert dataset_hub_id(results) == (expected_type if "/" in expected_type else None)
