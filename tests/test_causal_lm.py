"""The causal-lm task and the metric's language-model mode: per-group NLL and perplexity equal a
direct token-level computation; the paired ΔNLL interval on hand-made cases; the tables; explain
at equal token counts; the trainer's LM paths."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from hf_fairquant import audit, explain
from hf_fairquant.audit import AuditReport
from hf_fairquant.errors import FairQuantError
from hf_fairquant.inputs import GroupedInputs
from hf_fairquant.tasks import get_task, task_for_architecture, task_of
from tests.lm_fixtures import direct_token_nll, lm_dataset, lm_tokenizer, tiny_llama_lm

TASK = get_task("causal-lm")


@pytest.fixture(scope="module")
def lm():
    return tiny_llama_lm()


@pytest.fixture(scope="module")
def data():
    return lm_dataset(48)


@pytest.fixture(scope="module")
def metric():
    from hf_fairquant.metrics import load_group_disparity

    return load_group_disparity()


# ---------------------------------------------------------------- the task
def test_the_task_comes_from_the_head_and_builds_auto_model_for_causal_lm(lm):
    assert task_for_architecture("LlamaForCausalLM") is TASK and task_for_architecture("GPT2LMHeadModel") is TASK
    assert task_of(lm) is TASK
    assert TASK.auto_class("text") == "AutoModelForCausalLM" and TASK.pipeline_tag("text") == "text-generation"
    with pytest.raises(FairQuantError, match="LlamaForSequenceClassification is a sequence-classification model: its head "
                                             "does not fit the task 'causal-lm'.*AutoModelForCausalLM"):
        TASK.check_architecture("LlamaForSequenceClassification")


def test_per_example_nll_equals_a_direct_token_level_computation_at_any_batch_size(lm, data):
    sums, counts = direct_token_nll(lm, data)
    for batch_size in (1, 7, 48):  # right padding: a row's NLL does not depend on its batch
        out = GroupedInputs(lm, data, "language", processing_class=lm_tokenizer()).outputs(lm, batch_size)
        assert out.units.tolist() == counts.tolist()
        np.testing.assert_allclose(out.losses, sums / counts, rtol=1e-5)
        assert len(out.predictions) == counts.sum() == len(out.correct)


def test_a_labels_column_scores_only_its_tokens(lm, data):
    """Prompt tokens masked with -100 (as transformers does) are not scored."""
    def mask_prompt(row):
        return {"labels": [-100] * min(3, len(row["input_ids"]) - 1) + row["input_ids"][3:]}

    masked = data.map(mask_prompt)
    sums, counts = direct_token_nll(lm, masked)
    out = GroupedInputs(lm, masked, "language", processing_class=lm_tokenizer()).outputs(lm, 5)
    assert out.units.tolist() == counts.tolist() and (counts < direct_token_nll(lm, data)[1]).all()
    np.testing.assert_allclose(out.losses, sums / counts, rtol=1e-5)


def test_rows_without_a_target_are_refused_before_any_pass(lm, data):
    short = data.map(lambda row, i: {"input_ids": row["input_ids"][:1] if i == 2 else row["input_ids"],
                                     "attention_mask": row["attention_mask"][:1] if i == 2 else row["attention_mask"]},
                     with_indices=True)
    with pytest.raises(FairQuantError, match=r"row 2 of split 'eval' has 1 token\(s\).*at least 2"):
        GroupedInputs(lm, short, "language")
    unscored = data.map(lambda row, i: {"labels": [-100] * len(row["input_ids"]) if i == 4 else row["input_ids"]},
                        with_indices=True)
    with pytest.raises(FairQuantError, match="row 4 of split 'eval' scores no token"):
        GroupedInputs(lm, unscored, "language")


def test_group_perplexity_equals_the_token_level_computation(lm, data):
    report = audit(lm, data, [], "language", processing_class=lm_tokenizer(), progress=False, n_boot=0)
    assert report.task == "causal-lm"
    sums, counts = direct_token_nll(lm, data)
    groups = np.array(data["language"][:])
    m = report.fp.metrics
    for g in ("en", "ja", "ru"):
        nll = sums[groups == g].sum() / counts[groups == g].sum()  # token-weighted: all the group's tokens
        assert m["group_mean_loss"][g] == pytest.approx(nll, rel=1e-6)
        assert m["group_perplexity"][g] == pytest.approx(np.exp(nll), rel=1e-6)
        assert m["group_tokens"][g] == counts[groups == g].sum()
    assert m["perplexity"] == pytest.approx(np.exp(sums.sum() / counts.sum()), rel=1e-6)
    assert m["worst_group"] == max(m["group_mean_loss"], key=m["group_mean_loss"].get)


def test_quantized_rows_carry_the_paired_increase_and_token_agreement(lm, data):
    calibration = lm_dataset(24, seed=1)
    report = audit(lm, data, ["w8a8", "w2a8"], "language", calibration_dataset=calibration,
                   processing_class=lm_tokenizer(), progress=False, n_boot=50, calibration_size=12)
    fp = report.fp.metrics
    for row in report.quantized:
        m = row.metrics
        for g in fp["group_mean_loss"]:
            assert m["group_loss_increase"][g] == pytest.approx(m["group_mean_loss"][g] - fp["group_mean_loss"][g])
        increases = list(m["group_loss_increase"].values())
        assert m["disparate_loss_increase"] == pytest.approx(max(increases) - min(increases))
        assert 0 <= m["agreement"] <= 1 and m["flip_rate"] == pytest.approx(1 - m["agreement"])
    assert report.result("W8A8").metrics["agreement"] > report.result("W2A8").metrics["agreement"]
    table = report.to_markdown()
    assert "| model | bits | perplexity | en | ja | ru | worst group | perplexity gap | ΔNLL per group |" in table
    assert "token agreement" in table and "accuracy" not in table.split("\n")[0]
    again = AuditReport.from_json(report.to_json())
    assert again.to_markdown() == table and again.metric_names.label == "perplexity"


def test_logit_statistics_are_per_token_means(lm, data):
    inputs, targets = next(GroupedInputs(lm, data, "language", processing_class=lm_tokenizer()).batches(6))
    with torch.no_grad():
        output = lm(**inputs)
    stats = TASK.logit_statistics(output, targets)
    logits = output.logits.double()
    for i in range(6):
        scored = targets[i] != -100
        row, target = logits[i][scored], targets[i][scored]
        assert float(stats["logit_variance"][i]) == pytest.approx(float(row.var(-1, unbiased=False).mean()), rel=1e-5)
        assert float(stats["correct"][i]) == pytest.approx(float((row.argmax(-1) == target).double().mean()))
        nll = -torch.log_softmax(row, -1)[torch.arange(len(target)), target]
        assert float(stats["loss"][i]) == pytest.approx(float(nll.mean()), rel=1e-5)
        others = row.clone()
        others[torch.arange(len(target)), target] = -torch.inf
        margin = row[torch.arange(len(target)), target] - others.max(-1).values
        assert float(stats["margin"][i]) == pytest.approx(float(margin.mean()), rel=1e-5)


def test_trainer_evaluation_reduces_logits_per_example(lm, data):
    inputs, targets = next(GroupedInputs(lm, data, "language", processing_class=lm_tokenizer()).batches(8))
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.no_grad():
        logits = lm(**inputs).logits
    reduced = TASK.preprocess_logits_for_metrics()(logits, (labels, torch.zeros(8)))
    direct = TASK.batch_outputs(logits, targets)
    outputs = TASK.eval_outputs(reduced.numpy(), labels.numpy())
    np.testing.assert_allclose(outputs.losses, direct.losses, rtol=1e-6)
    assert outputs.units.tolist() == direct.units.tolist() and outputs.correct.sum() == direct.correct.sum()


# ---------------------------------------------------------------- the metric's language-model mode
def test_language_model_mode_by_hand(metric):
    r = metric.compute(groups=["de", "de", "ja"], losses=[2.0, 3.0, 4.0], loss_weights=[10, 30, 20],
                       reference_losses=[2.0, 2.5, 3.0], agreement=[1.0, 0.5, 0.25])
    assert r["group_mean_loss"] == {"de": 2.75, "ja": 4.0}  # (10·2 + 30·3) / 40
    assert r["group_loss_increase"] == {"de": 0.375, "ja": 1.0} and r["disparate_loss_increase"] == 0.625
    assert r["mean_loss"] == pytest.approx((20 + 90 + 80) / 60) and r["perplexity"] == pytest.approx(np.exp(190 / 60))
    assert r["group_agreement"] == {"de": 0.625, "ja": 0.25} and r["agreement"] == pytest.approx((10 + 15 + 5) / 60)
    assert r["worst_group"] == "ja" and r["most_increased_group"] == "ja" and r["group_tokens"] == {"de": 40.0, "ja": 20.0}
    assert "accuracy" not in r


def test_paired_increase_interval_on_hand_made_cases(metric):
    # every text of a group rises by the same amount: the paired interval is that point
    r = metric.compute(groups=["a"] * 40 + ["b"] * 40, losses=[1.0 + i % 3 for i in range(40)] * 2,
                       reference_losses=[0.5 + i % 3 for i in range(40)] + [1.0 + i % 3 for i in range(40)],
                       loss_weights=[1 + i % 5 for i in range(80)], n_boot=200, seed=1)
    assert r["group_loss_increase_ci"]["a"] == pytest.approx([0.5, 0.5]) and r["group_loss_increase_ci"]["b"] == [0.0, 0.0]
    assert r["disparate_loss_increase_ci"] == pytest.approx([0.5, 0.5])
    # an unpaired bootstrap would see the spread of the losses themselves: the interval of a mean is wide
    assert r["group_mean_loss_ci"]["a"][1] - r["group_mean_loss_ci"]["a"][0] > 0.3


def test_paired_increase_interval_matches_an_index_bootstrap(metric):
    """The module's interval against a plain implementation: resample each group's texts with
    replacement, ratio of token-weighted sums, hull of the percentile and basic intervals."""
    rng = np.random.default_rng(0)
    n = 60
    groups = np.repeat(["x", "y"], n)
    weights = rng.integers(5, 50, size=2 * n).astype(float)
    reference = rng.normal(3.0, 0.5, size=2 * n)
    losses = reference + np.where(groups == "x", 0.2, 0.05) + rng.normal(0, 0.1, size=2 * n)
    r = metric.compute(groups=groups.tolist(), losses=losses, reference_losses=reference, loss_weights=weights,
                       n_boot=4000, seed=3)
    boot = np.random.default_rng(11)
    for g in ("x", "y"):
        rows = np.flatnonzero(groups == g)
        estimate = (weights[rows] * (losses[rows] - reference[rows])).sum() / weights[rows].sum()
        draws = boot.integers(0, n, size=(4000, n))
        w = weights[rows][draws]
        replicates = (w * (losses[rows] - reference[rows])[draws]).sum(1) / w.sum(1)
        q_lo, q_hi = np.quantile(replicates, [0.025, 0.975])
        want = [min(q_lo, 2 * estimate - q_hi), max(q_hi, 2 * estimate - q_lo)]
        assert r["group_loss_increase"][g] == pytest.approx(estimate)
        assert r["group_loss_increase_ci"][g] == pytest.approx(want, abs=0.012)  # Monte Carlo error of 4000 replicates
    lo, hi = r["disparate_loss_increase_ci"]
    assert lo <= r["disparate_loss_increase"] <= hi and lo > 0.05  # x rose more than y


def test_language_model_mode_small_groups_and_bad_input(metric):
    r = metric.compute(groups=["a"] * 40 + ["b"] * 5, losses=[1.0] * 45, reference_losses=[0.9] * 45, n_boot=20)
    assert r["group_mean_loss_ci"]["b"] is None and r["disparate_loss_increase_ci"] is None
    assert r["groups_too_small_for_interval"] == ["b"] and r["group_perplexity_ci"]["a"] == pytest.approx([np.e, np.e])
    with pytest.raises(ValueError, match=r"`agreement` contains a value outside \[0, 1\] at index 1"):
        metric.compute(groups=["a", "b"], losses=[1.0, 2.0], agreement=[0.5, 1.5])
    with pytest.raises(ValueError, match="`agreement` belongs to the language-model mode"):
        metric.compute(predictions=[0], references=[0], groups=["a"], agreement=[1.0])
    with pytest.raises(ValueError, match=r"Unknown input\(s\) \['p_adjust'\] for the language-model mode"):
        metric.compute(groups=["a"], losses=[1.0], p_adjust="bh")
    with pytest.raises(ValueError, match="`loss_weights` contains a weight <= 0 at index 0"):
        metric.compute(groups=["a"], losses=[1.0], loss_weights=[0])
    with pytest.raises(ValueError, match="lengths differ"):
        metric.compute(groups=["a", "b"], losses=[1.0])


# ---------------------------------------------------------------- explain
def test_explain_compares_languages_at_equal_token_counts(lm, data):
    ex = explain(lm, "w4a8", data, "language", processing_class=lm_tokenizer(), progress=False, calibration_size=12,
                 examples_per_group=100, hvp_budget=6, probes=2, chunk_size=8)
    assert ex.settings["unit"] == "token" and ex.settings["equal_examples"]
    assert {g: ex.gradients[g].examples for g in ex.group_names} == {"en": 100, "ja": 100, "ru": 100}
    assert {g: ex.curvature["fp"][g].examples for g in ex.group_names} == {"en": 100, "ja": 100, "ru": 100}
    assert all(ex.gradients[g].noise_floor is not None for g in ex.group_names)
    text = ex.to_markdown()
    assert "100 tokens of every group (equal counts)" in text and "| group | tokens | ‖∇L‖ FP |" in text
    assert "logit variance across the vocabulary" in text
    with pytest.raises(FairQuantError, match="examples_per_group=100000 but group.*scored token"):
        explain(lm, "w4a8", data, "language", processing_class=lm_tokenizer(), progress=False, examples_per_group=100000)


def test_token_budget_sampling_is_exact():
    from hf_fairquant.diagnostics._sampling import sample_rows_by_units

    codes = np.array([0, 1, 0, 0, 1, 0])
    units = np.array([5, 9, 7, 3, 4, 8])
    rows, keep = sample_rows_by_units(codes, 0, units, 12, seed=0)
    assert (np.diff(rows) > 0).all() and keep.sum() == 12 and (keep <= units[rows]).all() and (keep > 0).all()


def test_a_labels_column_that_is_not_per_token_is_not_taken_for_token_labels(lm, data):
    named = data.add_column("labels", data["language"][:])  # e.g. a language-identification dataset's label
    out = GroupedInputs(lm, named, "language", processing_class=lm_tokenizer()).outputs(lm, 16)
    plain = GroupedInputs(lm, data, "language", processing_class=lm_tokenizer()).outputs(lm, 16)
    np.testing.assert_array_equal(out.losses, plain.losses)
