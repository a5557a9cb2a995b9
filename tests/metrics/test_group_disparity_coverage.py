"""group_disparity: the intervals hold their estimate always, and the truth about as often as they say.

The coverage simulation runs the metric's own bootstrap (``_replicates``, ``_hull_interval``, what
``compute`` runs) on audits drawn from known cell probabilities; ``benchmarks/metric_coverage.py``
runs the same with more repetitions for the metric card's tables.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def script(group_disparity):
    return sys.modules[type(group_disparity).__module__]


def cells(acc: float, ref_acc: float, discordant: float) -> list[float]:
    """[both wrong, only evaluated right, only reference right, both right] (the module's cell order)."""
    drop = ref_acc - acc
    lost, gained = (discordant + drop) / 2, (discordant - drop) / 2
    both = ref_acc - lost
    return [1.0 - both - lost - gained, gained, lost, both]


def statistics(p: np.ndarray) -> dict:
    acc, ref = p[:, 1] + p[:, 3], p[:, 2] + p[:, 3]
    drop = ref - acc
    return {"group_accuracy_drop": drop, "disparate_drop": drop.max() - drop.min(), "accuracy_gap": acc.max() - acc.min()}


def coverage(script, p, n, reps: int, n_boot: int, seed: int = 0, level: float = 0.95) -> dict:
    """Share of simulated audits whose interval holds the truth: the metric's ('hull') and the plain percentile one."""
    rng = np.random.default_rng(seed)
    p, n = np.asarray(p), np.asarray(n)
    truth = statistics(p)
    hits = {k: {"hull": 0.0, "percentile": 0.0} for k in truth}
    for _ in range(reps):
        counts = np.array([rng.multinomial(n_g, p_g) for n_g, p_g in zip(n, p, strict=True)])
        codes = np.repeat(np.repeat(np.arange(len(n)), 4), counts.ravel())
        cell = np.repeat(np.tile(np.arange(4), len(n)), counts.ravel())
        samples = script._replicates(codes, cell % 2 == 1, cell >= 2, len(n), n_boot, int(rng.integers(2**31)))
        estimate = statistics(counts / counts.sum(axis=1, keepdims=True))
        for key, t in truth.items():
            lo, hi = script._hull_interval(samples[key], estimate[key], level, script._BOUNDS[key])
            q_lo, q_hi = np.quantile(samples[key], [(1 - level) / 2, (1 + level) / 2], axis=0)
            hits[key]["hull"] += np.mean((lo <= t + 1e-12) & (t - 1e-12 <= hi))
            hits[key]["percentile"] += np.mean((q_lo <= t + 1e-12) & (t - 1e-12 <= q_hi))
    return {k: {m: v / reps for m, v in d.items()} for k, d in hits.items()}


def test_coverage_is_nominal_for_the_drop_and_a_separated_disparate_drop(script):
    """Per-group drops of 2, 6 and 15 points (disparate drop 13), 300 examples per group, 95 % intervals."""
    p = [cells(0.8817, 0.9031, 0.0807), cells(0.8012, 0.8629, 0.1213), cells(0.7021, 0.8533, 0.2119)]
    measured = coverage(script, p, [300] * 3, reps=1000, n_boot=1000)
    print("coverage", measured)
    assert measured["group_accuracy_drop"]["hull"] == pytest.approx(0.95, abs=0.02)  # over 3 x 1000 intervals
    assert measured["disparate_drop"]["hull"] == pytest.approx(0.95, abs=0.02)
    assert measured["accuracy_gap"]["hull"] == pytest.approx(0.95, abs=0.02)


def test_at_an_exact_tie_the_interval_still_reaches_the_truth(script):
    """Three groups with equal accuracy and drop: gap and disparate drop are 0, their estimates are not.
    The percentile interval never holds 0; the metric's keeps most of its coverage (the card says how much)."""
    measured = coverage(script, [cells(0.80, 0.85, 0.10)] * 3, [200] * 3, reps=300, n_boot=500, seed=1)
    print("coverage", measured)
    for key in ("disparate_drop", "accuracy_gap"):
        assert measured[key]["percentile"] <= 0.02
        assert measured[key]["hull"] >= 0.85


def test_the_seven_group_audit_that_printed_an_interval_without_its_estimate(group_disparity, script):
    """Issue 25: 7 groups of 177, gap 0.0395, printed with the percentile interval [0.0452, 0.1412]."""
    correct = [130, 133, 133, 133, 133, 133, 137]  # gap 7 / 177 = 0.0395
    groups = np.repeat([f"g{i}" for i in range(7)], 177)
    predictions = np.concatenate([np.r_[np.zeros(c), np.ones(177 - c)] for c in correct]).astype(int)
    result = group_disparity.compute(predictions=predictions, references=np.zeros(7 * 177, int), groups=groups,
                                     n_boot=2000, seed=0)
    assert result["accuracy_gap"] == pytest.approx(7 / 177)
    codes = np.repeat(np.arange(7), 177)
    gaps = script._replicates(codes, predictions == 0, None, 7, 2000, 0)["accuracy_gap"]
    q_lo, q_hi = np.quantile(gaps, [0.025, 0.975])
    assert q_lo > result["accuracy_gap"]  # the old interval, [0.0452, 0.1525]: it excludes its estimate
    lo, hi = result["accuracy_gap_ci"]
    assert lo <= result["accuracy_gap"] <= hi and lo == pytest.approx(max(0.0, 2 * 7 / 177 - q_hi)) and hi == q_hi


@st.composite
def audits(draw) -> dict:
    n_groups = draw(st.integers(1, 7))
    sizes = draw(st.lists(st.integers(1, 80), min_size=n_groups, max_size=n_groups))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    groups = np.repeat(np.arange(n_groups), sizes)
    n = groups.size
    acc = rng.uniform(0, 1, n_groups)[groups]
    ref_acc = rng.uniform(0, 1, n_groups)[groups]
    references = rng.integers(0, 3, n)
    return {
        "predictions": np.where(rng.random(n) < acc, references, (references + 1) % 3),
        "references": references,
        "groups": groups,
        "reference_predictions": np.where(rng.random(n) < ref_acc, references, (references + 2) % 3),
        "n_boot": draw(st.integers(1, 200)),
        "confidence_level": draw(st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99])),
        "min_group_size": draw(st.integers(0, 40)),
        "seed": draw(st.integers(0, 100)),
    }


CI_OF = {"accuracy_ci": "accuracy", "accuracy_gap_ci": "accuracy_gap", "worst_group_accuracy_ci": "worst_group_accuracy",
         "accuracy_drop_ci": "accuracy_drop", "disparate_drop_ci": "disparate_drop", "gap_change_ci": "gap_change"}
PER_GROUP_CI_OF = {"group_accuracy_ci": "group_accuracy", "group_accuracy_drop_ci": "group_accuracy_drop"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=audits())
@example(data={"predictions": [0] * 30 + [1] * 30, "references": [0] * 60, "groups": [0] * 30 + [1] * 30,
               "reference_predictions": [0] * 60, "n_boot": 50, "confidence_level": 0.95, "min_group_size": 30,
               "seed": 0})  # max - min at its largest, zero-width replicates
def test_no_interval_excludes_its_estimate(group_disparity, data):
    result = group_disparity.compute(**data)
    counts = result["group_count"]
    small = [g for g, c in counts.items() if c < data["min_group_size"]]
    assert result["groups_too_small_for_interval"] == small
    for ci_key, key in CI_OF.items():
        interval = result[ci_key]
        across_groups = ci_key not in ("accuracy_ci", "accuracy_drop_ci")
        expected_none = (across_groups and small) or sum(counts.values()) < data["min_group_size"]
        assert (interval is None) == bool(expected_none), ci_key
        if interval is not None:
            assert interval[0] <= result[key] <= interval[1], (ci_key, result[key], interval)
    for ci_key, key in PER_GROUP_CI_OF.items():
        for group, interval in result[ci_key].items():
            assert (interval is None) == (group in small), (ci_key, group)
            if interval is not None:
                assert -1.0 <= interval[0] <= result[key][group] <= interval[1] <= 1.0, (ci_key, group, interval)
