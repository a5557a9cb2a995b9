"""QAT on the torchao backend inside FairQuantTrainer: prepare → train → convert, exact resume,
a saved model that plain transformers loads, and Conv2d refused before any work."""

import pytest
import torch

from hf_fairquant import FairQuantTrainer, load_quantized
from hf_fairquant.batching import iterate_batches
from hf_fairquant.errors import UnsupportedByBackendError
from hf_fairquant.quantization import LayerQuant, layer_bits
from tests.conftest import image_dataset, text_dataset, tiny_distilbert, tiny_resnet, tiny_vit
from tests.training.test_trainer import make_args

MIXED = {"preset": "w2a8", "backend": "torchao", "overrides": {"classifier": "w8a8", "vit.layers.0.*": "w4"},
         "exclude": ["vit.embeddings.*"]}


def _logits(model, data):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(**inputs).logits for inputs in iterate_batches(model, data, 16)])


def test_torchao_qat_trains_converts_and_saves_a_transformers_model(tmp_path):
    train = image_dataset(n=64)
    trainer = FairQuantTrainer(model=tiny_vit(), args=make_args(tmp_path, max_steps=3, quantization=MIXED), train_dataset=train)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert type(trainer.model.classifier).__name__ == "FakeQuantizedLinear"  # step="prepare"
    trainer.model.eval()
    fake = _logits(trainer.model, train)
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)
    bits = layer_bits(trainer.model)
    assert bits["classifier"] == LayerQuant(8, 8)
    assert bits["vit.layers.0.mlp.fc1"] == LayerQuant(4)
    assert bits["vit.layers.1.mlp.fc1"] == LayerQuant(2, 8)
    assert bits["vit.embeddings.patch_embeddings.projection"] is None
    assert type(trainer.model.classifier) is torch.nn.Linear  # step="convert": integer weight tensors
    assert not torch.equal(fake, _logits(trainer.model, train))  # it trained
    trainer.save_model(str(tmp_path / "final"))
    reloaded = load_quantized(tmp_path / "final")
    assert layer_bits(reloaded) == bits
    assert torch.equal(_logits(reloaded, train), _logits(trainer.model, train))
    from transformers import AutoModelForImageClassification

    plain = AutoModelForImageClassification.from_pretrained(tmp_path / "final")
    assert torch.equal(_logits(plain, train), _logits(trainer.model, train))


@pytest.mark.parametrize("preset", ["w4", "w2a8"])
def test_converted_logits_equal_the_fake_quantized_ones(tmp_path, preset):
    """torchao's QAT simulation is what it deploys: convert changes no logit."""
    train = text_dataset()
    args = make_args(tmp_path, quantization={"preset": preset, "backend": "torchao"})
    trainer = FairQuantTrainer(model=tiny_distilbert(), args=args, train_dataset=train)
    fake = _logits(trainer.model, train)
    trainer._qat_backend.convert_qat(trainer.model, trainer._qat_plan)
    assert torch.equal(fake, _logits(trainer.model, train))


def test_torchao_qat_resume_equals_uninterrupted(tmp_path):
    # mixed bits on DistilBERT; every model kind (ViT, whose checkpoints carry legacy key names,
    # included) is resumed exactly in test_resume_exact.py
    train, evaluation = text_dataset(n=64), text_dataset(n=32, seed=5)
    recipe = {"preset": "w2a8", "backend": "torchao", "overrides": {"classifier": "w8a8", "*.layer.0.*": "w4"}}
    common = dict(max_steps=6, save_strategy="steps", save_steps=3, group_sampling="group_balanced",
                  group_weighting="dro", dro_step_size=0.5, quantization=recipe)
    full = FairQuantTrainer(model=tiny_distilbert(), args=make_args(tmp_path / "a", **common), train_dataset=train, eval_dataset=evaluation)
    full.train()
    resumed = FairQuantTrainer(model=tiny_distilbert(), args=make_args(tmp_path / "b", **common), train_dataset=train, eval_dataset=evaluation)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    assert torch.equal(full.loss_weighting.q, resumed.loss_weighting.q)
    assert not torch.equal(full.loss_weighting.q, torch.full((2,), 0.5, dtype=torch.float64))
    assert layer_bits(resumed.model)["classifier"] == LayerQuant(8, 8)
    assert torch.equal(_logits(full.model, evaluation), _logits(resumed.model, evaluation))


def test_conv2d_in_a_torchao_qat_recipe_is_refused_before_any_work(tmp_path):
    model = tiny_resnet()
    before = {n: type(m) for n, m in model.named_modules()}
    with pytest.raises(UnsupportedByBackendError, match=r"quantizes nn\.Linear only.*resnet\.embedder\.embedder\.convolution.*backend: quanto"):
        FairQuantTrainer(model=model, args=make_args(tmp_path, quantization={"preset": "w4", "backend": "torchao"}),
                         train_dataset=image_dataset())
    assert {n: type(m) for n, m in model.named_modules()} == before
