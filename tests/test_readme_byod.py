"""The README's "Bring your own data" section, run as written."""

import re
from pathlib import Path

import transformers
from datasets import DatasetDict

from tests.conftest import raw_text_dataset, tiny_distilbert, tiny_tokenizer

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _blocks() -> list[str]:
    section = re.search(r"^## Bring your own data\n(.*?)^## ", README, flags=re.S | re.M).group(1)
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_an_image_and_a_text_block():
    blocks = _blocks()
    assert len(blocks) == 2 and "with_transform" in blocks[0] and "DataCollatorWithPadding" in blocks[1]


def test_image_block_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_blocks()[0], "README.md (image block)", "exec"), scope)
    assert scope["report"].quantized and scope["raw"].quantized
    assert set(scope["ex"].group_names) == {"common", "rare"}
    assert 0.0 <= float(capsys.readouterr().out.strip().splitlines()[-1]) <= 1.0
    assert (tmp_path / "byod" / "final" / "README.md").is_file()


def test_text_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tokenizer, model = tiny_tokenizer(), tiny_distilbert()
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", lambda *a, **k: model)
    scope = {"reviews": DatasetDict({"train": raw_text_dataset(32, seed=0), "test": raw_text_dataset(24, seed=1)})}
    exec(compile(_blocks()[1], "README.md (text block)", "exec"), scope)
    assert set(scope["report"].fp.metrics["group_accuracy"]) == {"x", "y"}
    assert scope["trainer"].state.global_step == 10
