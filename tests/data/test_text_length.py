"""Text: truncation to the model's limit by default, `--max-length`, dynamic padding."""

import json

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from hf_fairquant.data import DataConfig, text_length_limit
from tests.conftest import tiny_tokenizer

# hf_fairquant.cli / .run are imported inside the tests: importing hf_fairquant.run at
# collection time binds the *submodule* hf_fairquant.audit over the lazily exported function
# `hf_fairquant.audit` for every later `from hf_fairquant import audit` (reported to the lead).

POSITIONS = 32


def _long_texts(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    words = [int(rng.integers(5, 60)) for _ in range(n)]  # most rows are longer than the model allows
    return Dataset.from_dict({
        "text": [" ".join(f"w{int(t)}" for t in rng.integers(0, 98, k)) for k in words],
        "label": rng.integers(0, 3, n).tolist(),
        "group": ["x" if i % 3 else "y" for i in range(n)],
    })


@pytest.fixture(scope="module")
def text_setup(tmp_path_factory):
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    root = tmp_path_factory.mktemp("text")
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64, num_labels=3,
                              max_position_embeddings=POSITIONS)
    DistilBertForSequenceClassification(config).save_pretrained(root / "model")
    tiny_tokenizer(model_max_length=10**30).save_pretrained(root / "model")  # a tokenizer with no real limit
    DatasetDict({"train": _long_texts(24, 0), "test": _long_texts(18, 1)}).save_to_disk(str(root / "data"))
    return root


def test_the_limit_is_the_smaller_of_tokenizer_and_model():
    class Config:
        max_position_embeddings = 32

    assert text_length_limit(tiny_tokenizer(model_max_length=10**30), Config()) == 32
    assert text_length_limit(tiny_tokenizer(model_max_length=16), Config()) == 16
    assert text_length_limit(tiny_tokenizer(model_max_length=10**30)) is None


@pytest.mark.parametrize("max_length, longest", [(None, POSITIONS), (12, 12)])
def test_truncated_not_padded(text_setup, max_length, longest):
    from hf_fairquant.run import load_pretrained

    data = DataConfig(source=str(text_setup / "data"), text_column="text", max_length=max_length)
    _, splits, _, _ = load_pretrained(str(text_setup / "model"), data)
    lengths = [len(ids) for ids in splits["test"]["input_ids"][:]]
    assert max(lengths) == longest and min(lengths) < longest  # truncated to the limit, not padded to it


def test_cli_audit_max_length(text_setup, tmp_path, capsys):
    from hf_fairquant.cli import main

    common = ["audit", "--model", str(text_setup / "model"), "--dataset", str(text_setup / "data"),
              "--text-column", "text", "--recipes", "w8a8", "--n-boot", "0"]
    assert main([*common, "--output-dir", str(tmp_path / "default")]) == 0  # was: a raw RuntimeError (128 > 32)
    results = json.loads((tmp_path / "default" / "results.json").read_text())
    assert set(results["audit"]["fp"]["metrics"]["group_accuracy"]) == {"x", "y"}
    assert main([*common, "--max-length", "16", "--output-dir", str(tmp_path / "short")]) == 0
    capsys.readouterr()
    assert main([*common, "--max-length", "64", "--output-dir", str(tmp_path / "long")]) == 2
    assert "max_length=64 exceeds the model's max_position_embeddings=32" in capsys.readouterr().err
