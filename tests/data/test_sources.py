import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from hf_fairquant.data import (
    FASHION_MNIST_CLASSES, DataConfig, load_digits_dataset, load_fashion_mnist, load_grouped_dataset, load_source,
)
from hf_fairquant.data.sources import FASHION_MNIST_DIR

needs_fmnist = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (make data installs it)",
)


@needs_fmnist
def test_fashion_mnist_is_the_real_dataset():
    dsd = load_fashion_mnist()
    assert {s: len(d) for s, d in dsd.items()} == {"train": 60000, "test": 10000}
    assert dsd["train"].features["label"].names == FASHION_MNIST_CLASSES
    assert np.bincount(dsd["test"]["label"][:]).tolist() == [1000] * 10
    image = np.asarray(dsd["train"][0]["image"])
    assert image.shape == (28, 28) and image.dtype == np.uint8 and image.max() > 0


def test_missing_fashion_mnist_files_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)


def test_digits():
    dsd = load_digits_dataset()
    assert len(dsd["train"]) + len(dsd["test"]) == 1797
    assert np.asarray(dsd["test"][0]["image"]).shape == (8, 8)


def test_local_files_and_saved_folders(tmp_path):
    ds = Dataset.from_dict({"text": ["a", "b"], "label": [0, 1], "group": ["x", "y"]})
    ds.to_csv(tmp_path / "d.csv")
    ds.to_json(tmp_path / "d.jsonl")
    assert load_source(str(tmp_path / "d.csv"))["train"]["group"][:] == ["x", "y"]
    assert load_source(str(tmp_path / "d.jsonl"))["train"]["label"][:] == [0, 1]
    DatasetDict(train=ds, test=ds).save_to_disk(tmp_path / "saved")
    assert set(load_source(str(tmp_path / "saved"))) == {"train", "test"}
    (tmp_path / "d.xyz").write_text("?")
    with pytest.raises(ValueError, match="allowed suffixes"):
        load_source(str(tmp_path / "d.xyz"))


def test_grouped_digits_end_to_end():
    data, spec = load_grouped_dataset(DataConfig(source="digits", long_tail_classes=["3", "8"], long_tail_fraction=0.1))
    assert spec.names == ["head", "tail"]
    assert data["train"].features["pixel_values"].shape == (1, 8, 8)
    pix = data["train"].with_format("numpy")["pixel_values"][:]
    assert abs(pix.mean()) < 1e-3 and abs(pix.std() - 1) < 1e-2  # standardised by the train split
    counts = spec.counts(data)
    assert counts["train"]["tail"] < 0.15 * counts["train"]["head"]


def test_grouped_dataset_rejects_bad_columns():
    with pytest.raises(ValueError, match=r"group column\(s\) \['sex'\] not found in split 'train'"):
        load_grouped_dataset(DataConfig(source="digits", group_columns=["sex"]))
    with pytest.raises(ValueError, match="split 'validation' not found"):
        load_grouped_dataset(DataConfig(source="digits", eval_split="validation", long_tail_classes=["1"]))
