import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from hf_fairquant.data import make_long_tailed


def _dsd(per_class=100, classes=("a", "b", "c", "d")):
    feats = Features(x=Value("int64"), label=ClassLabel(names=list(classes)))
    def split(n):
        labels = np.repeat(np.arange(len(classes)), n)
        return Dataset.from_dict({"x": np.arange(len(labels)), "label": labels}, features=feats)
    return DatasetDict(train=split(per_class), test=split(10))


@pytest.mark.parametrize("fraction, kept", [(0.05, 5), (0.1, 10), (0.001, 1), (1.0, 100)])
def test_counts_are_as_requested(fraction, kept):
    out = make_long_tailed(_dsd(), ["b", "d"], fraction=fraction, seed=3)
    counts = np.bincount(out["train"]["label"][:], minlength=4).tolist()
    assert counts == [100, kept, 100, kept]
    assert np.bincount(out["test"]["label"][:]).tolist() == [10, 10, 10, 10]  # test stays balanced
    groups = out["train"]["group"][:]
    labels = out["train"]["label"][:]
    assert all((g == "tail") == (y in (1, 3)) for g, y in zip(groups, labels))
    assert out["test"]["group"][:].count("tail") == 20


def test_seeded_and_class_ids_accepted():
    a = make_long_tailed(_dsd(), [1], seed=0)["train"]["x"][:]
    b = make_long_tailed(_dsd(), ["b"], seed=0)["train"]["x"][:]
    c = make_long_tailed(_dsd(), ["b"], seed=1)["train"]["x"][:]
    assert a == b and a != c


@pytest.mark.parametrize(
    "kwargs, message",
    [({"tail_classes": ["zebra"]}, r"tail class 'zebra' is not a class of column 'label'; classes: \['a'"),
     ({"tail_classes": ["a"], "fraction": 0}, r"fraction must be in \(0, 1\]"),
     ({"tail_classes": []}, "tail_classes is empty"),
     ({"tail_classes": ["a"], "label_column": "y"}, "label column 'y' not found")],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_long_tailed(_dsd(), **kwargs)
