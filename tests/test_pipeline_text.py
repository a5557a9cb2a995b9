"""A text recipe with a model from `config`: the WordLevel tokenizer is trained on the training
split, sized into the model, saved in the published folder; > 6 groups keep per-group CIs."""

import json

import numpy as np
import pytest
import torch
import yaml

from hf_fairquant import load_quantized
from hf_fairquant.errors import FairQuantError
from hf_fairquant.run import dry_run, load_recipe, run

WORDS = {"a": ["red", "green"], "b": ["north", "south", "east", "west"]}


def _rows(n: int, seed: int) -> list[dict]:
    """Income-like toy rows: 8 groups a×b; the label follows the 'job' word (learnable)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a, b = WORDS["a"][i % 2], WORDS["b"][(i // 2) % 4]
        label = int(rng.integers(2))
        job = ["clerk", "farmer"][label] if rng.random() < 0.9 else ["farmer", "clerk"][label]
        rows.append({"text": f"age {20 + i % 40}. job {job}. hours {30 + i % 3 * 10}.", "a": a, "b": b, "label": label})
    return rows


@pytest.fixture
def text_recipe(tmp_path):
    for split, n, seed in (("train", 160, 0), ("test", 80, 1)):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(n, seed)))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").rename(data_dir / f"{split}.jsonl")
    recipe = {
        "data": {"source": str(data_dir), "text_column": "text", "image_column": None, "group_columns": ["a", "b"],
                 "max_length": 12},
        "model": {"tokenizer": "wordlevel", "config": {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                                                       "num_attention_heads": 2, "intermediate_size": 32,
                                                       "max_position_embeddings": 16}},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 32, "learning_rate": 0.01, "save_strategy": "no",
                     "use_cpu": True, "seed": 0, "disable_tqdm": True},
        "audit": {"recipes": ["w8a8"], "calibration_size": 64, "n_boot": 20},
        "explain": {"enabled": False},
        "mitigation": {"quantization": "w8a8", "num_train_epochs": 1, "per_device_train_batch_size": 32,
                       "learning_rate": 0.001, "save_strategy": "no", "use_cpu": True, "seed": 0, "disable_tqdm": True},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_text_model_from_config_trains_and_publishes_its_tokenizer(text_recipe, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "out"
    recipe = load_recipe(text_recipe, output_dir=str(out))
    assert recipe.mitigation.group_column == "a,b"  # the data's groups, unless the section says otherwise
    result = run(recipe, echo=lambda *a: None)
    tok = AutoTokenizer.from_pretrained(out)  # the published folder loads with the standard tools
    assert AutoTokenizer.from_pretrained(out / "fp_model").get_vocab() == tok.get_vocab()
    assert {"job", "clerk", "farmer", "hours"} <= set(tok.get_vocab()) and tok.pad_token == "[PAD]"
    assert result.fp_model.config.vocab_size == len(tok) and result.fp_model.config.pad_token_id == tok.pad_token_id
    enc = tok(["age 25. job clerk. hours 40.", "age 61. job farmer. hours 30."], padding="max_length", max_length=12,
              return_tensors="pt")
    model = load_quantized(out)
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, result.quantized_model(**enc).logits)
    # 8 groups: more than the summary's columns, so every group is listed one row each; with 10 examples
    # each they are under the metric's min_group_size (30): no interval is printed for them (issue 26 item 6)
    report = (out / "report.md").read_text()
    card = (out / "README.md").read_text()
    for a in WORDS["a"]:
        for b in WORDS["b"]:
            assert any(line.startswith(f"| {a}×{b} | 10 | ") and line.count("[") == 0 for line in report.splitlines()), a + b
            assert any(line.startswith(f"| {a}×{b} | 10 | ") and line.count("[") == 0 for line in card.splitlines()), a + b
    assert "bootstrap interval (small groups have wide intervals)" in card


def test_text_model_from_config_needs_a_tokenizer(text_recipe, tmp_path):
    raw = yaml.safe_load(text_recipe.read_text())
    del raw["model"]["tokenizer"]
    text_recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(FairQuantError, match="needs a tokenizer: model.tokenizer: wordlevel"):
        dry_run(load_recipe(text_recipe, output_dir=str(tmp_path / "o")))
    raw["model"]["tokenizer"] = "wordlevel"
    raw["data"] = {"source": "digits"}
    text_recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(FairQuantError, match="model.tokenizer applies to text data"):
        dry_run(load_recipe(text_recipe, output_dir=str(tmp_path / "o")))
