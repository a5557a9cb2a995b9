"""group_disparity: stratified bootstrap intervals (coverage of the estimate, width, seeding, speed)."""

from __future__ import annotations

import time

import numpy as np
import pytest


def synthetic(n_per_group: int, accuracies=(0.95, 0.8, 0.6), ref_accuracies=(0.96, 0.9, 0.85), seed: int = 0):
    """Groups with well separated accuracies; the reference model is better, more so on small-accuracy groups."""
    rng = np.random.default_rng(seed)
    n = n_per_group * len(accuracies)
    groups = np.repeat(np.arange(len(accuracies)), n_per_group)
    references = rng.integers(0, 5, n)
    wrong = (references + 1) % 5
    predictions = np.where(rng.random(n) < np.asarray(accuracies)[groups], references, wrong)
    reference_predictions = np.where(rng.random(n) < np.asarray(ref_accuracies)[groups], references, wrong)
    return {
        "predictions": predictions,
        "references": references,
        "groups": groups,
        "reference_predictions": reference_predictions,
    }


CI_OF = {
    "accuracy_ci": "accuracy",
    "accuracy_gap_ci": "accuracy_gap",
    "worst_group_accuracy_ci": "worst_group_accuracy",
    "disparate_drop_ci": "disparate_drop",
    "gap_change_ci": "gap_change",
}


def test_intervals_contain_the_estimate(group_disparity):
    result = group_disparity.compute(**synthetic(300), n_boot=500)
    assert result["n_boot"] == 500 and result["confidence_level"] == 0.95
    for ci_key, key in CI_OF.items():
        lo, hi = result[ci_key]
        assert lo <= result[key] <= hi, ci_key
    for ci_key, key in (("group_accuracy_ci", "group_accuracy"), ("group_accuracy_drop_ci", "group_accuracy_drop")):
        assert result[ci_key].keys() == result[key].keys()
        for name, (lo, hi) in result[ci_key].items():
            assert lo <= result[key][name] <= hi, (ci_key, name)
            assert -1.0 <= lo <= hi <= 1.0


def test_intervals_narrow_as_n_grows(group_disparity):
    def widths(n_per_group):
        result = group_disparity.compute(**synthetic(n_per_group), n_boot=400)
        return np.array([hi - lo for lo, hi in result["group_accuracy_ci"].values()] + [
            result["accuracy_gap_ci"][1] - result["accuracy_gap_ci"][0]
        ])

    small, large = widths(50), widths(2000)
    assert (large < small / 3).all()  # ~ 1/sqrt(40) ≈ 0.16 of the width


def test_higher_confidence_gives_wider_intervals(group_disparity):
    data = synthetic(200)
    narrow = group_disparity.compute(**data, n_boot=500, confidence_level=0.5)["accuracy_gap_ci"]
    wide = group_disparity.compute(**data, n_boot=500, confidence_level=0.99)["accuracy_gap_ci"]
    assert wide[0] <= narrow[0] and narrow[1] <= wide[1] and wide[1] - wide[0] > narrow[1] - narrow[0]


def test_seed_reproduces_and_varies(group_disparity):
    data = synthetic(100)
    keys = [*CI_OF, "group_accuracy_ci", "group_accuracy_drop_ci"]
    first = group_disparity.compute(**data, n_boot=200, seed=7)
    again = group_disparity.compute(**data, n_boot=200, seed=7)
    other = group_disparity.compute(**data, n_boot=200, seed=8)
    assert {k: first[k] for k in keys} == {k: again[k] for k in keys}
    assert {k: first[k] for k in keys} != {k: other[k] for k in keys}
    # The point estimates do not depend on the bootstrap.
    assert first["group_accuracy"] == other["group_accuracy"] == group_disparity.compute(**data)["group_accuracy"]


def test_no_bootstrap_keys_without_n_boot(group_disparity):
    result = group_disparity.compute(**synthetic(10))
    assert not [k for k in result if k.endswith("_ci")] and "n_boot" not in result


def test_groups_too_small_get_no_interval_and_are_named(group_disparity):
    """Issue 26 item 6: a one-example group got a "95 %" interval [1.0, 1.0]; now it gets none, and says why."""
    result = group_disparity.compute(predictions=[1, 0], references=[1, 1], groups=["a", "b"], n_boot=50)
    assert result["group_accuracy_ci"] == {"a": None, "b": None}
    assert result["groups_too_small_for_interval"] == ["a", "b"] and result["min_group_size"] == 30
    # statistics across groups include the small ones' noise: no interval either; the overall one needs 30 examples
    assert result["accuracy_gap_ci"] is None and result["worst_group_accuracy_ci"] is None
    assert result["accuracy_ci"] is None


def test_only_the_small_group_loses_its_interval(group_disparity):
    data = synthetic(40)
    keep = (data["groups"] != 2) | (np.arange(len(data["groups"])) < 99)  # group 2 keeps 19 examples
    data = {k: np.asarray(v)[keep] for k, v in data.items()}
    result = group_disparity.compute(**data, n_boot=200)
    assert result["group_count"]["2"] == 19 and result["groups_too_small_for_interval"] == ["2"]
    assert result["group_accuracy_ci"]["2"] is None and result["group_accuracy_drop_ci"]["2"] is None
    assert all(result["group_accuracy_ci"][g] is not None for g in ("0", "1"))
    for key in ("accuracy_gap_ci", "worst_group_accuracy_ci", "disparate_drop_ci", "gap_change_ci"):
        assert result[key] is None, key
    assert result["accuracy_ci"] is not None and result["accuracy_drop_ci"] is not None  # 99 examples in all
    # min_group_size is the user's: 19 examples are enough when they say so; 0 or 1 turns the limit off
    relaxed = group_disparity.compute(**data, n_boot=200, min_group_size=19)
    assert relaxed["groups_too_small_for_interval"] == [] and relaxed["accuracy_gap_ci"] is not None
    single = group_disparity.compute(predictions=[1, 0], references=[1, 1], groups=["a", "b"], n_boot=50,
                                     min_group_size=1)
    assert single["group_accuracy_ci"] == {"a": [1.0, 1.0], "b": [0.0, 0.0]}


def naive_bootstrap(data: dict, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """The textbook stratified bootstrap: resample example indices within each group, one replicate at a time."""
    rng = np.random.default_rng(seed)
    p, y, g, r = (np.asarray(data[k]) for k in ("predictions", "references", "groups", "reference_predictions"))
    members = [np.flatnonzero(g == code) for code in np.unique(g)]
    gaps, drops = [], []
    for _ in range(n_boot):
        idx = [rng.choice(m, size=m.size, replace=True) for m in members]
        acc = np.array([(p[i] == y[i]).mean() for i in idx])
        ref = np.array([(r[i] == y[i]).mean() for i in idx])
        gaps.append(acc.max() - acc.min())
        drops.append(ref - acc)
    acc = np.array([(p[m] == y[m]).mean() for m in members])
    drop = np.array([(r[m] == y[m]).mean() for m in members]) - acc

    def hull(samples, estimate):  # percentile interval and basic interval, their hull
        q_lo, q_hi = np.quantile(samples, [0.025, 0.975], axis=0)
        return np.array([np.minimum(q_lo, 2 * estimate - q_hi), np.maximum(q_hi, 2 * estimate - q_lo)])

    return {"accuracy_gap_ci": hull(np.array(gaps), acc.max() - acc.min()),
            "group_accuracy_drop_ci": hull(np.array(drops), drop).T}


def test_agrees_with_textbook_index_resampling(group_disparity):
    """The multinomial cell counts are the textbook bootstrap: same intervals up to Monte Carlo noise."""
    data = synthetic(150, seed=3)
    result = group_disparity.compute(**data, n_boot=4000, seed=1)
    naive = naive_bootstrap(data, n_boot=4000, seed=2)
    # Two independent Monte Carlo runs of the same bootstrap distribution: quantiles agree to MC noise.
    assert result["accuracy_gap_ci"] == pytest.approx(naive["accuracy_gap_ci"], abs=0.015)
    assert np.array(list(result["group_accuracy_drop_ci"].values())) == pytest.approx(
        naive["group_accuracy_drop_ci"], abs=0.015
    )


def test_fast_on_ten_thousand_examples(group_disparity):
    rng = np.random.default_rng(0)
    n = 10_000
    references = rng.integers(0, 10, n)
    data = {
        "predictions": np.where(rng.random(n) < 0.8, references, rng.integers(0, 10, n)),
        "references": references,
        "groups": rng.choice([f"g{i}" for i in range(8)], n),
        "reference_predictions": np.where(rng.random(n) < 0.9, references, rng.integers(0, 10, n)),
    }
    group_disparity.compute(**data, n_boot=10)  # warm-up
    start = time.perf_counter()
    group_disparity.compute(**data, n_boot=1000)
    assert time.perf_counter() - start < 1.0
