"""FairQuantTrainer on a causal LM: the task's labels come from the text, class-label sampling is
refused, examples weigh once unless loss_unit='token', and the input embedding can join torchao QAT."""

import pytest
import torch

from hf_fairquant import FairQuantTrainer
from hf_fairquant.errors import FairQuantError, UnsupportedByBackendError
from hf_fairquant.quantization import QuantRecipe, layer_bits
from hf_fairquant.tasks.causal_lm import LanguageModelingCollator
from tests.lm_fixtures import lm_dataset, lm_tokenizer, tiny_llama_lm
from tests.training.test_trainer import make_args


def _trainer(tmp_path, **kwargs):
    args = make_args(tmp_path, group_column="language", max_steps=2, per_device_train_batch_size=8, **kwargs)
    return FairQuantTrainer(model=tiny_llama_lm().train(), args=args, train_dataset=lm_dataset(24),
                            processing_class=lm_tokenizer())


@pytest.mark.parametrize("mode", ["class_balanced", "group_class_balanced"])
def test_class_balanced_sampling_is_refused_for_a_task_without_class_labels(tmp_path, mode):
    with pytest.raises(FairQuantError, match=f"group_sampling='{mode}' balances class labels, and the task 'causal-lm' "
                                             "has none.*group_balanced"):
        _trainer(tmp_path, group_sampling=mode)


def test_the_collator_adds_labels_from_the_text_or_its_labels_column():
    tok = lm_tokenizer()
    collate = LanguageModelingCollator(__import__("transformers").DataCollatorWithPadding(tok))
    rows = [dict(tok("list directory contents")), dict(tok("копировать файлы и каталоги"))]
    batch = collate(rows)
    mask = batch["attention_mask"]
    assert torch.equal(batch["labels"], batch["input_ids"].masked_fill(mask == 0, -100))
    with_labels = [{**r, "labels": [-100] + r["input_ids"][1:]} for r in rows]
    assert (collate(with_labels)["labels"][:, 0] == -100).all()
    tok.padding_side = "left"  # the labels follow the tokens, whichever side pads
    try:
        left = LanguageModelingCollator(__import__("transformers").DataCollatorWithPadding(tok))(with_labels)
    finally:
        tok.padding_side = "right"
    assert sorted(left["labels"][left["labels"] != -100].tolist()) == sorted(collate(with_labels)["labels"][collate(with_labels)["labels"] != -100].tolist())


def test_examples_weigh_once_unless_token_weighting_is_asked(tmp_path):
    trainer = _trainer(tmp_path, group_weighting={"en": 1.0, "ja": 1.0, "ru": 1.0})
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model.eval()
    per_example = trainer.compute_loss(model.train(), batch).detach()
    targets = trainer.task.targets(batch, batch["labels"])
    with torch.no_grad():
        model.eval()
        out = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")})
    losses = trainer.task.loss(out, targets)
    assert float(per_example) == pytest.approx(float(losses.mean()), rel=1e-5)
    trainer.args.loss_unit = "token"
    units = trainer.task.units(targets).float()
    assert float(trainer.compute_loss(model.train(), batch)) == pytest.approx(float((losses * units).sum() / units.sum()), rel=1e-5)
    with pytest.raises(FairQuantError, match="unknown loss_unit 'word'"):
        make_args(tmp_path, loss_unit="word")


def test_the_input_embedding_joins_torchao_qat_when_a_recipe_names_it(tmp_path):
    recipe = {"preset": "w4a8", "backend": "torchao", "overrides": {"model.embed_tokens": "w4", "lm_head": "w8a8"}}
    trainer = _trainer(tmp_path, quantization=recipe, group_sampling="group_balanced", group_weighting="dro")
    assert str(layer_bits(trainer.model)["model.embed_tokens"]) == "w4"
    trainer.train()
    bits = {n: str(q) for n, q in layer_bits(trainer.model).items()}
    assert bits["model.embed_tokens"] == "w4" and bits["lm_head"] == "w8a8" and bits["model.layers.0.mlp.up_proj"] == "w4a8"
    # not named: the embedding stays float (plans are Conv2d/Linear by default)
    assert "model.embed_tokens" not in QuantRecipe.parse("w4a8@torchao").plan(tiny_llama_lm())


def test_embedding_quantization_is_refused_where_it_cannot_work():
    model = tiny_llama_lm()
    with pytest.raises(UnsupportedByBackendError, match="optimum-quanto quantizes Conv2d and Linear, not the embedding"):
        FairQuantTrainer(model=model, args=make_args("/tmp/unused", group_column="language",
                                                     quantization={"preset": "w4", "overrides": {"model.embed_tokens": "w8"}}),
                         train_dataset=lm_dataset(8), processing_class=lm_tokenizer())
    from hf_fairquant.quantization import get_quantizer

    plan = QuantRecipe.parse({"preset": "w4", "backend": "torchao", "overrides": {"model.embed_tokens": "w8a8"}}).plan(model)
    with pytest.raises(UnsupportedByBackendError, match="look token ids up in a table: there are no input activations"):
        get_quantizer("torchao").check(model, plan)


def test_evaluation_and_the_trainer_card_report_perplexity_per_language(tmp_path):
    from hf_fairquant.training.card import trainer_card

    args = make_args(tmp_path, group_column="language", max_steps=1, per_device_train_batch_size=8)
    trainer = FairQuantTrainer(model=tiny_llama_lm().train(), args=args, train_dataset=lm_dataset(16),
                               eval_dataset=lm_dataset(12, seed=3), processing_class=lm_tokenizer())
    trainer.train()
    metrics = trainer.evaluate()
    assert {f"eval_group_perplexity/{g}" for g in ("en", "ja", "ru")} <= set(metrics)
    assert metrics["eval_perplexity"] > 1 and "eval_accuracy" not in metrics
    card = str(trainer_card(trainer))
    assert "## Perplexity per group" in card and "| group | training examples | eval examples | perplexity | mean loss |" in card
    assert "overall perplexity" in card
