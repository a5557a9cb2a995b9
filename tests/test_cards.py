"""Card metadata holds Hub ids only: never a local path in base_model or the model-index dataset."""

import pytest

from hf_fairquant.cards import dataset_hub_id, eval_results, hub_id


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


def _results(source: str, dataset_id: str | None = None) -> dict:
    metrics = {"accuracy": 0.8, "accuracy_gap": 0.1, "group_accuracy": {"a": 0.85, "b": 0.75},
               "group_accuracy_drop": {"a": 0.0, "b": 0.05}}
    return {
        "audit": {"group_names": ["a", "b"], "fp": {"metrics": metrics}, "quantized": [{"name": "Q", "metrics": metrics}]},
        "published": {"name": "Q"}, "model": {"task": "image-classification"},
        "card": {"dataset_id": dataset_id, "dataset_name": None}, "data": {"source": source, "eval_split": "test"},
    }


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
