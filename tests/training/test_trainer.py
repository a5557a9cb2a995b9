import pytest
import torch
import torch.nn.functional as F

from hf_fairquant import FairQuantTrainer, FairQuantTrainingArguments, load_quantized
from hf_fairquant.batching import iterate_batches
from hf_fairquant.errors import FairQuantError
from hf_fairquant.quantization import layer_bits
from hf_fairquant.training.state import saved_state
from tests.conftest import image_dataset, text_dataset, tiny_distilbert, tiny_resnet, tiny_vit


def make_args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_train_batch_size=16,
        per_device_eval_batch_size=32, learning_rate=1e-3, save_strategy="no", seed=0,
        disable_tqdm=True, logging_strategy="no",
    )
    defaults.update(kwargs)
    return FairQuantTrainingArguments(**defaults)


@pytest.fixture(scope="module")
def data():
    return image_dataset(n=96, groups=("a", "a", "a", "b")), image_dataset(n=48, seed=5)


def test_group_codes_reach_the_loss_not_the_model(tmp_path, data):
    train, evaluation = data
    model = tiny_resnet()
    seen = []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(sorted(kw)), with_kwargs=True)
    trainer = FairQuantTrainer(model=model, args=make_args(tmp_path, max_steps=2), train_dataset=train, eval_dataset=evaluation)
    trainer.train()
    assert seen and all(keys == ["pixel_values"] for keys in seen)
    metrics = trainer.evaluate()
    assert {"eval_group_accuracy/a", "eval_group_accuracy/b", "eval_worst_group_accuracy", "eval_accuracy_gap"} <= set(metrics)


def test_weighted_loss_equals_hand_computation(tmp_path, data):
    train, _ = data
    trainer = FairQuantTrainer(
        model=tiny_resnet(), args=make_args(tmp_path, group_weighting="inverse_frequency"), train_dataset=train
    )
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        per_example = F.cross_entropy(trainer.model(pixel_values=batch["pixel_values"]).logits, batch["labels"], reduction="none")
    counts = {"a": 72, "b": 24}
    w = {g: (96 / 2) / n for g, n in counts.items()}  # inverse frequency, mean weight 1 per example
    weights = torch.tensor([w["a"], w["b"]])[batch["group"]]
    expected = (weights * per_example).sum() / weights.sum()
    assert torch.isclose(loss, expected, atol=1e-6)
    trainer.model.eval()  # evaluation loss is the plain mean (eval mode: BatchNorm uses running stats)
    with torch.no_grad():
        eval_losses = F.cross_entropy(trainer.model(pixel_values=batch["pixel_values"]).logits, batch["labels"], reduction="none")
    assert torch.isclose(trainer.compute_loss(trainer.model, batch), eval_losses.mean(), atol=1e-6)


@pytest.mark.parametrize("make_model, make_data", [(tiny_resnet, image_dataset), (tiny_vit, image_dataset), (tiny_distilbert, text_dataset)])
def test_qat_saves_a_model_that_reloads_exactly(tmp_path, make_model, make_data):
    train = make_data()
    args = make_args(tmp_path, max_steps=3, quantization={"preset": "w4a8", "overrides": {"classifier*": "w8a8"}})
    trainer = FairQuantTrainer(model=make_model(), args=args, train_dataset=train)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    reloaded = load_quantized(tmp_path / "final")
    assert layer_bits(reloaded) == layer_bits(trainer.model)
    inputs = next(iterate_batches(reloaded, train, 16))
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, trainer.model(**inputs).logits)


def test_bert_qat_loss_falls(tmp_path):
    train = text_dataset(n=64, length=8)
    # a learnable rule: the first token names the class
    train = train.map(lambda row: {"input_ids": [10 + row["labels"]] + row["input_ids"][1:]})
    args = make_args(tmp_path, num_train_epochs=8, learning_rate=5e-3, quantization="w4a8", logging_strategy="epoch")
    trainer = FairQuantTrainer(model=tiny_distilbert(), args=args, train_dataset=train)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0], losses


def _final_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("restore_callbacks", [False, True])
def test_resume_equals_uninterrupted(tmp_path, data, restore_callbacks):
    train, evaluation = data
    common = dict(
        max_steps=8, save_strategy="steps", save_steps=4, group_sampling="group_balanced", group_weighting="dro",
        dro_step_size=0.5, quantization="w4a8", restore_callback_states_from_checkpoint=restore_callbacks,
    )
    full = FairQuantTrainer(model=tiny_resnet(), args=make_args(tmp_path / "a", **common), train_dataset=train, eval_dataset=evaluation)
    full.train()
    resumed = FairQuantTrainer(model=tiny_resnet(), args=make_args(tmp_path / "b", **common), train_dataset=train, eval_dataset=evaluation)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-4"))
    assert torch.equal(full.loss_weighting.q, resumed.loss_weighting.q)
    assert not torch.equal(full.loss_weighting.q, torch.full((2,), 0.5, dtype=torch.float64))
    # the state travels in transformers' own trainer_state.json (ExportableState), not a side file
    saved = saved_state(str(tmp_path / "a" / "checkpoint-4"))
    assert saved["args"]["group_names"] == ["a", "b"] and saved["args"]["quantization"]["name"] == "w4a8"
    assert len(saved["attributes"]["dro_q"]) == 2
    a, b = _final_state(full), _final_state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ma, mb = full.evaluate(), resumed.evaluate()
    for key in ma:
        if "runtime" not in key and "per_second" not in key:
            assert ma[key] == mb[key], key


def test_resume_with_another_recipe_is_refused(tmp_path, data):
    train, _ = data
    first = FairQuantTrainer(
        model=tiny_resnet(), args=make_args(tmp_path / "a", max_steps=2, save_strategy="steps", save_steps=2, quantization="w4"),
        train_dataset=train,
    )
    first.train()
    second = FairQuantTrainer(model=tiny_resnet(), args=make_args(tmp_path / "b", max_steps=4, quantization="w8"), train_dataset=train)
    with pytest.raises(FairQuantError, match="quantization="):
        second.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))


def test_dro_weights_are_logged_per_group(tmp_path, data):
    train, _ = data
    args = make_args(tmp_path, max_steps=4, logging_strategy="steps", logging_steps=2, group_weighting="dro", dro_step_size=0.5)
    trainer = FairQuantTrainer(model=tiny_resnet(), args=args, train_dataset=train)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2
    for entry in logged:
        weights = [entry["dro_weight/a"], entry["dro_weight/b"]]
        assert sum(weights) == pytest.approx(1.0) and weights != [0.5, 0.5]
    assert [logged[-1]["dro_weight/a"], logged[-1]["dro_weight/b"]] == pytest.approx(trainer.loss_weighting.q.tolist())


@pytest.mark.parametrize(
    "kwargs, dataset_change, message",
    [
        ({"group_column": "sex"}, None, r"group column\(s\) \['sex'\] not found in split 'train'"),
        ({"group_weighting": {"a": 1.0}}, None, r"missing \['b'\]"),
        ({"group_weighting": {"a": 1.0, "b": 2.0, "c": 1.0}}, None, r"unknown \['c'\]"),
        ({}, lambda d: d.remove_columns("group"), r"group column\(s\) \['group'\] not found"),
    ],
)
def test_bad_trainer_input(tmp_path, data, kwargs, dataset_change, message):
    train, _ = data
    if dataset_change:
        train = dataset_change(train)
    with pytest.raises(ValueError, match=message):
        FairQuantTrainer(model=tiny_resnet(), args=make_args(tmp_path, **kwargs), train_dataset=train)


def test_qat_on_a_model_without_quantizable_modules(tmp_path, data):
    class NoLinear(torch.nn.Module):
        config = type("C", (), {"num_labels": 10, "problem_type": None})()

        def forward(self, pixel_values, **kwargs):
            return {"logits": pixel_values.flatten(1)[:, :10]}

    with pytest.raises(ValueError, match="has no Conv2d or Linear module to quantize"):
        FairQuantTrainer(model=NoLinear(), args=make_args(tmp_path, quantization="w4"), train_dataset=data[0])
