"""FairQuantTrainer writes the fairness card (save_model, push_to_hub); `hf-fairquant push` takes its folder."""

from __future__ import annotations

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from hf_fairquant import FairQuantTrainer, load_quantized
from hf_fairquant.cli import main
from tests import hub_fixtures
from tests.conftest import image_dataset, tiny_resnet
from tests.hub_server import validate_card_metadata
from tests.training.test_trainer import make_args

hub = hub_fixtures.hub


def _trained(tmp_path, **kwargs):
    args = make_args(tmp_path / "run", max_steps=3, quantization="w4a8", calibration_size=16, group_weighting="dro",
                     **kwargs)
    trainer = FairQuantTrainer(model=tiny_resnet(), args=args, train_dataset=image_dataset(n=48, groups=("a", "a", "b")),
                               eval_dataset=image_dataset(n=32, seed=4))
    trainer.train()
    trainer.evaluate()
    return trainer


def _metadata(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


def test_save_model_writes_the_fairness_card_and_push_takes_the_folder(hub, tmp_path, capsys):
    trainer = _trained(tmp_path)
    out = tmp_path / "final"
    trainer.save_model(str(out))
    text = (out / "README.md").read_text()
    card = ModelCard.load(out / "README.md", ignore_metadata_errors=False)
    assert "FairQuantTrainer" in text and "More information needed" not in text
    assert "Final Group-DRO weights: a " in text and "| b | 16 | 16 |" in text  # training and eval examples of b
    assert f"{100 * trainer.state.log_history[-1]['eval_group_accuracy/b']:.1f}" in text
    assert str(tmp_path) not in yaml.safe_dump(_metadata(text))  # no local path in the metadata
    assert card.data.base_model is None and card.data.eval_results is None  # no Hub ids known: fields omitted

    assert main(["push", str(out), "--repo-id", "user/tiny-fair"]) == 0  # was: refused (no README.md)
    printed = capsys.readouterr().out
    assert 'load_quantized("user/tiny-fair")' in printed and str(out) not in printed.splitlines()[-1]
    reloaded = load_quantized("user/tiny-fair")  # from the loopback Hub: the trained weights, exactly
    batch = image_dataset(n=8, seed=9).with_format("torch")[:8]["pixel_values"]
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values=batch).logits, trainer.model(pixel_values=batch).logits)


def test_push_to_hub_uploads_the_fairness_card(hub, tmp_path, monkeypatch):
    import transformers.utils.hub

    # transformers keeps one HfApi, whose endpoint was fixed when it was first made: a fresh one
    # (made after the loopback Hub is in place) talks to the loopback Hub
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
    trainer = _trained(tmp_path, hub_model_id="user/tiny-qat")
    trainer.push_to_hub(dataset_tags="user/grouped-digits", license="mit")
    text = hub.repo("user/tiny-qat").commits[-1].files["README.md"].decode()
    assert "FairQuantTrainer" in text and "More information needed" not in text
    assert validate_card_metadata(text) == ([], [])  # what the Hub checks on commit
    meta = _metadata(text)
    assert meta["datasets"] == ["user/grouped-digits"] and meta["license"] == "mit"
    results = meta["model-index"][0]["results"]
    names = {m["name"]: m["value"] for r in results for m in r["metrics"]}
    log = trainer.state.log_history[-1]
    assert names["accuracy, group a (w4a8)"] == log["eval_group_accuracy/a"]
    assert {r["dataset"]["type"] for r in results} == {"user/grouped-digits"}


def test_before_train_save_model_is_refused_and_the_card_says_full_precision(tmp_path):
    """Issue 26, item 5: save_model() before train() wrote "W4 (4.00 mean weight bits)" over float weights."""
    from hf_fairquant.errors import FairQuantError

    args = make_args(tmp_path / "run", quantization="w4")
    trainer = FairQuantTrainer(model=tiny_resnet(), args=args, train_dataset=image_dataset(n=16))
    assert trainer.qat_converted is False
    with pytest.raises(FairQuantError, match=r"prepared for QAT with w4 .* but not converted: train\(\) converts it"):
        trainer.save_model(str(tmp_path / "early"))
    assert not (tmp_path / "early").exists()
    trainer.create_model_card()  # what push_to_hub writes after its internal save
    text = (tmp_path / "run" / "README.md").read_text()
    assert "4.00 mean weight bits" not in text and "W4 (" not in text
    assert "full precision, not yet trained or converted (QAT recipe W4 prepared) (32.00 mean weight bits)" in text
    assert "Not quantized yet" in text
    plain = FairQuantTrainer(model=tiny_resnet(), args=make_args(tmp_path / "fp"), train_dataset=image_dataset(n=16))
    assert plain.qat_converted is None
    plain.save_model(str(tmp_path / "fp_saved"))  # no QAT recipe: a float model is what it is
    assert "Full precision (the trainer had no `quantization` recipe)" in (tmp_path / "fp_saved" / "README.md").read_text()
