"""group_disparity: paired statistics against a reference model — exact McNemar tests, Holm/BH
adjustment, minimum detectable drops — plus the one rule for ignored labels and token-weighted losses."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import stats


def table(cells: dict[str, tuple[int, int, int, int]]) -> dict:
    """Inputs with, per group, (both right, only reference right, only evaluated right, both wrong) examples."""
    predictions, references, reference_predictions, groups = [], [], [], []
    for group, (both, lost, gained, neither) in cells.items():
        for ref_ok, ok, count in ((1, 1, both), (1, 0, lost), (0, 1, gained), (0, 0, neither)):
            predictions += [0 if ok else 1] * count
            reference_predictions += [0 if ref_ok else 2] * count
            references += [0] * count
            groups += [group] * count
    return {"predictions": predictions, "references": references, "groups": groups,
            "reference_predictions": reference_predictions}


HAND = {"a": (40, 9, 1, 5), "b": (30, 0, 0, 2), "c": (25, 15, 1, 0), "d": (50, 4, 4, 1)}


@pytest.fixture(scope="module")
def script(group_disparity):
    """The module's script as evaluate imported it (for its private helpers)."""
    return sys.modules[type(group_disparity).__module__]


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs(group_disparity):
    result = group_disparity.compute(**table(HAND))
    for group, (_, lost, gained, _) in HAND.items():
        assert result["group_newly_wrong"][group] == lost and result["group_newly_right"][group] == gained
        expected = stats.binomtest(lost, lost + gained, 0.5).pvalue if lost + gained else 1.0
        assert result["group_mcnemar_p_value"][group] == pytest.approx(expected, rel=1e-12)
    assert result["group_mcnemar_p_value"]["b"] == 1.0  # no discordant pair: no evidence of a change
    assert result["group_mcnemar_p_value"]["d"] == 1.0  # 4 lost, 4 gained
    lost, gained = sum(v[1] for v in HAND.values()), sum(v[2] for v in HAND.values())
    assert (result["newly_wrong"], result["newly_right"]) == (lost, gained)
    assert result["mcnemar_p_value"] == pytest.approx(stats.binomtest(lost, lost + gained, 0.5).pvalue, rel=1e-12)
    # the drop is (lost - gained) / n, the quantity the test is about
    for group, (both, lost_g, gained_g, neither) in HAND.items():
        n = both + lost_g + gained_g + neither
        assert result["group_accuracy_drop"][group] == pytest.approx((lost_g - gained_g) / n)


def test_holm_and_benjamini_hochberg(group_disparity):
    data = table(HAND)
    raw = np.array([group_disparity.compute(**data)["group_mcnemar_p_value"][g] for g in HAND])
    m = raw.size
    order = np.argsort(raw)
    holm = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):  # by hand: step-down, monotone
        running = max(running, min(1.0, (m - rank) * raw[i]))
        holm[i] = running
    result = group_disparity.compute(**data)
    assert result["p_adjust"] == "holm"
    assert list(result["group_mcnemar_p_adjusted"].values()) == pytest.approx(holm, rel=1e-12)
    bh = group_disparity.compute(**data, p_adjust="bh")
    assert bh["p_adjust"] == "bh"
    assert list(bh["group_mcnemar_p_adjusted"].values()) == pytest.approx(
        stats.false_discovery_control(raw, method="bh"), rel=1e-12
    )
    none = group_disparity.compute(**data, p_adjust="none")
    assert none["group_mcnemar_p_adjusted"] == none["group_mcnemar_p_value"]
    # significant: adjusted p <= alpha = 1 - confidence_level
    for res in (result, bh, none):
        assert res["group_mcnemar_significant"] == {g: p <= 0.05 for g, p in res["group_mcnemar_p_adjusted"].items()}
    assert result["group_mcnemar_significant"]["c"] and not result["group_mcnemar_significant"]["b"]
    loose = group_disparity.compute(**data, confidence_level=0.8)
    assert loose["group_mcnemar_significant"] == {g: p <= 0.2 for g, p in loose["group_mcnemar_p_adjusted"].items()}


def test_adjustment_helper_on_edge_cases(script):
    assert script._adjust_p_values(np.array([]), "holm").size == 0
    assert script._adjust_p_values(np.array([0.3]), "holm").tolist() == [0.3]
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.01])
    for method in ("bh",):
        assert script._adjust_p_values(p, method) == pytest.approx(stats.false_discovery_control(p, method=method))
    assert (script._adjust_p_values(p, "holm") >= script._adjust_p_values(p, "bh")).all()
    assert script._adjust_p_values(np.array([0.9, 0.8]), "holm").tolist() == [1.0, 1.0]


def test_critical_values_match_binomtest(script):
    """The power computation's rejection region is the one binomtest's p-value gives (checked at its edges)."""
    d = np.array([*range(0, 60), 99, 250, 1000, 4001])
    for alpha in (0.05, 0.01, 0.05 / 7, 0.2):
        k = script._mcnemar_critical(d, alpha)
        for n_disc, k_d in zip(d.tolist(), k.tolist()):
            edges = {k_d - 1, k_d, k_d + 1, n_disc - k_d - 1, n_disc - k_d, n_disc - k_d + 1}
            for b in sorted(b for b in edges if 0 <= b <= n_disc):
                rejected = stats.binomtest(b, n_disc, 0.5).pvalue <= alpha if n_disc else False
                assert rejected == (b <= k_d or b >= n_disc - k_d), (alpha, n_disc, b)


def test_minimum_detectable_drop(script):
    # all 6 pairs must be lost for p <= 0.05 (2 / 2**6 = 0.031): power delta**6 >= 0.8
    assert script._min_detectable_drop(6, 0, 0.05) == pytest.approx(0.8 ** (1 / 6), abs=1e-6)
    assert script._min_detectable_drop(5, 0, 0.05) is None  # 2 / 2**5 = 0.0625: no drop can be significant
    assert script._min_detectable_drop(0, 0, 0.05) is None
    # large n: the normal approximation (z_{1-alpha/2} + z_{0.8}) sqrt(psi / n)
    for n, discordant in ((2000, 200), (10_000, 200), (500, 25)):
        approx = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * np.sqrt(discordant / n / n)
        assert script._min_detectable_drop(n, discordant, 0.05) == pytest.approx(approx, rel=0.05)
    # more examples, less discordance or a looser level: smaller detectable drops
    assert script._min_detectable_drop(400, 40, 0.05) < script._min_detectable_drop(100, 10, 0.05)
    assert script._min_detectable_drop(400, 20, 0.05) < script._min_detectable_drop(400, 40, 0.05)
    assert script._min_detectable_drop(400, 40, 0.1) < script._min_detectable_drop(400, 40, 0.05)


def test_minimum_detectable_drop_has_the_stated_power(script):
    """Simulate audits with the true drop equal to the MDE: the exact test rejects ~80 % of the time."""
    n, psi, alpha = 300, 0.1, 0.05
    mde = script._min_detectable_drop(n, int(psi * n), alpha)
    rng = np.random.default_rng(0)
    draws = rng.multinomial(n, [(psi + mde) / 2, (psi - mde) / 2, 1 - psi], size=3000)
    k = script._mcnemar_critical(draws[:, 0] + draws[:, 1], alpha)
    rejected = (draws[:, 0] <= k) | (draws[:, 0] >= draws[:, 0] + draws[:, 1] - k)
    assert rejected.mean() == pytest.approx(0.8, abs=0.025)


def test_mde_keys_use_the_per_group_level(group_disparity, script):
    result = group_disparity.compute(**table(HAND))
    m = len(HAND)
    for group, (both, lost, gained, neither) in HAND.items():
        n = both + lost + gained + neither
        assert result["group_min_detectable_drop"][group] == pytest.approx(
            script._min_detectable_drop(n, lost + gained, 0.05 / m), abs=1e-6
        )
    unadjusted = group_disparity.compute(**table(HAND), p_adjust="none")
    assert all(unadjusted["group_min_detectable_drop"][g] < result["group_min_detectable_drop"][g] for g in HAND)
    total = sum(sum(v) for v in HAND.values())
    discordant = sum(v[1] + v[2] for v in HAND.values())
    assert result["min_detectable_drop"] == pytest.approx(script._min_detectable_drop(total, discordant, 0.05), abs=1e-6)
    tiny = group_disparity.compute(predictions=[0, 1], references=[0, 0], groups=["a", "b"], reference_predictions=[0, 0])
    assert tiny["group_min_detectable_drop"] == {"a": None, "b": None}  # no drop of one example can be significant


def test_no_paired_keys_without_reference(group_disparity):
    result = group_disparity.compute(predictions=[0, 1], references=[0, 0], groups=["a", "b"])
    assert not [k for k in result if "mcnemar" in k or "detectable" in k or "newly" in k or k == "p_adjust"]


@pytest.mark.parametrize("name", ["references", "predictions", "reference_predictions"])
@pytest.mark.parametrize("ignored", [-1, -100])
def test_negative_class_ids_are_refused_with_the_rule(group_disparity, name, ignored):
    """Issue 26 item 18: a reference of -1 was scored as a wrong prediction (accuracy 0.5 instead of 0.75)."""
    data = {"predictions": [1, 0, 1, 1], "references": [1, 0, 1, 1], "groups": ["a", "a", "b", "b"],
            "reference_predictions": [1, 0, 1, 1]}
    data[name] = [1, 0, ignored, 1]
    with pytest.raises(ValueError) as err:
        group_disparity.compute(**data)
    message = str(err.value)
    assert f"`{name}`" in message and "index 2" in message and str(ignored) in message
    assert "-100" in message and "drop the examples" in message
    # the module is still usable after the refusal
    assert group_disparity.compute(predictions=[1], references=[1], groups=["a"])["accuracy"] == 1.0


def test_token_weighted_losses(group_disparity):
    """loss_weights (e.g. token counts) turn the mean losses into per-token means."""
    losses = np.array([1.0, 3.0, 2.0, 0.5])
    reference = np.array([0.5, 1.0, 1.0, 0.5])
    tokens = np.array([3, 1, 2, 2])
    result = group_disparity.compute(
        predictions=[0, 0, 0, 0], references=[0, 0, 0, 0], groups=["a", "a", "b", "b"],
        losses=losses, reference_losses=reference, loss_weights=tokens,
    )
    assert result["group_mean_loss"] == pytest.approx({"a": (3 * 1 + 1 * 3) / 4, "b": (2 * 2 + 2 * 0.5) / 4})
    assert result["mean_loss"] == pytest.approx((losses * tokens).sum() / tokens.sum())
    assert result["group_loss_increase"]["a"] == pytest.approx((6 - (1.5 + 1)) / 4)
    assert result["loss_increase"] == pytest.approx(((losses - reference) * tokens).sum() / tokens.sum())
    unweighted = group_disparity.compute(predictions=[0] * 4, references=[0] * 4, groups=["a", "a", "b", "b"],
                                         losses=losses, loss_weights=[1, 1, 1, 1])
    assert unweighted["group_mean_loss"] == pytest.approx({"a": 2.0, "b": 1.25})


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        (dict(loss_weights=[1, 1]), ["loss_weights", "needs `losses`"]),
        (dict(losses=[0.1, 0.2], loss_weights=[1, 0]), ["loss_weights", "index 1", "> 0"]),
        (dict(losses=[0.1, 0.2], loss_weights=[1, float("nan")]), ["loss_weights", "NaN"]),
        (dict(losses=[0.1, 0.2], loss_weights=[1]), ["loss_weights=1", "predictions=2"]),
        (dict(p_adjust="bonferroni"), ["p_adjust", "holm", "bh"]),
        (dict(p_adjust=None), ["p_adjust"]),
        (dict(min_group_size=-1), ["min_group_size", "-1"]),
        (dict(min_group_size=2.5), ["min_group_size", "2.5"]),
    ],
)
def test_bad_new_options(group_disparity, kwargs, fragments):
    with pytest.raises(ValueError) as err:
        group_disparity.compute(predictions=[0, 1], references=[0, 1], groups=["a", "b"], **kwargs)
    for fragment in fragments:
        assert fragment in str(err.value)
