"""group_disparity: differential tests against fairlearn, the reference/loss keys, input handling."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
from sklearn.metrics import accuracy_score  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TOL = 1e-12


@st.composite
def group_values(draw, n_groups: int) -> list:
    """Distinct group values: ints (negatives and several digits, to test numeric order) or strings."""
    if draw(st.booleans()):
        return draw(st.lists(st.integers(-3, 120), min_size=n_groups, max_size=n_groups, unique=True))
    text = st.text(alphabet="abZ09 _-×é", min_size=0, max_size=3)
    return draw(st.lists(text, min_size=n_groups, max_size=n_groups, unique=True))


@st.composite
def classification(draw) -> dict:
    n = draw(st.integers(1, 40))
    pool = draw(group_values(draw(st.integers(1, 5))))
    n_classes = draw(st.integers(2, 4))
    label = st.integers(0, n_classes - 1)
    return {
        "predictions": draw(st.lists(label, min_size=n, max_size=n)),
        "references": draw(st.lists(label, min_size=n, max_size=n)),
        "groups": draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)),
    }


def metric_frame(data: dict, sensitive_features=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fairlearn_metrics.MetricFrame(
            metrics={"accuracy": accuracy_score, "count": fairlearn_metrics.count},
            y_true=np.asarray(data["references"]),
            y_pred=np.asarray(data["predictions"]),
            sensitive_features=pd.Series(data["groups"]) if sensitive_features is None else sensitive_features,
        )


def sorted_names(values) -> list[str]:
    return [str(v) for v in sorted(set(values))]


@SETTINGS
@given(data=classification())
@example(data={"predictions": [1, 0, 2], "references": [1, 1, 2], "groups": ["only"] * 3})  # one group
@example(data={"predictions": [1, 0, 2], "references": [1, 1, 2], "groups": [7, -1, 10]})  # groups of one
@example(data={"predictions": [1, 1], "references": [0, 0], "groups": ["a", "b"]})  # all wrong: 0/0 ratio
def test_matches_fairlearn_metric_frame(group_disparity, data):
    result = group_disparity.compute(**data)
    frame = metric_frame(data)
    by_group = {str(k): v for k, v in frame.by_group["accuracy"].items()}
    counts = {str(k): int(v) for k, v in frame.by_group["count"].items()}

    assert list(result["group_accuracy"]) == sorted_names(data["groups"])
    assert result["group_accuracy"].keys() == by_group.keys()
    for name, acc in by_group.items():
        assert result["group_accuracy"][name] == pytest.approx(acc, abs=TOL)
        assert result["group_error_rate"][name] == pytest.approx(1 - acc, abs=TOL)
    assert result["group_count"] == counts
    assert result["accuracy"] == pytest.approx(frame.overall["accuracy"], abs=TOL)
    assert result["accuracy_gap"] == pytest.approx(frame.difference()["accuracy"], abs=TOL)
    assert result["worst_group_accuracy"] == pytest.approx(frame.group_min()["accuracy"], abs=TOL)
    assert result["group_accuracy"][result["worst_group"]] == result["worst_group_accuracy"]
    assert result["max_difference_to_overall"] == pytest.approx(
        frame.difference(method="to_overall")["accuracy"], abs=TOL
    )
    ratio = frame.ratio()["accuracy"]
    if math.isnan(ratio):  # fairlearn's 0/0; the metric defines it as parity
        assert max(by_group.values()) == 0 and result["accuracy_ratio"] == 1.0
    else:
        assert result["accuracy_ratio"] == pytest.approx(ratio, abs=TOL)


@SETTINGS
@given(data=classification(), second=st.data())
def test_intersections_match_fairlearn(group_disparity, data, second):
    n = len(data["groups"])
    groups_2 = second.draw(st.lists(st.sampled_from(second.draw(group_values(3))), min_size=n, max_size=n))
    if any("×" in str(v) for v in [*data["groups"], *groups_2]):
        with pytest.raises(ValueError, match="contains '×', the separator of intersection names"):
            group_disparity.compute(**data, groups_2=groups_2)
        return
    result = group_disparity.compute(**data, groups_2=groups_2)
    frame = metric_frame(data, pd.DataFrame({"g": data["groups"], "g2": groups_2}))
    # fairlearn lists every combination (NaN where none occurs); the metric lists those that occur.
    expected = {f"{g}×{g2}": v for (g, g2), v in frame.by_group["accuracy"].items() if not math.isnan(v)}
    assert list(result["group_accuracy"]) == [f"{g}×{g2}" for g, g2 in sorted(set(zip(data["groups"], groups_2)))]
    assert result["group_accuracy"] == pytest.approx(expected, abs=TOL)
    assert result["accuracy_gap"] == pytest.approx(frame.difference()["accuracy"], abs=TOL)


@st.composite
def binary_classification(draw) -> dict:
    """Binary data in which every group has a positive and a negative reference (fairlearn's rates are defined)."""
    pool = draw(group_values(draw(st.integers(1, 4))))
    predictions, references, groups = [], [], []
    for g in pool:
        m = draw(st.integers(2, 8))
        references += [0, 1] + draw(st.lists(st.integers(0, 1), min_size=m - 2, max_size=m - 2))
        predictions += draw(st.lists(st.integers(0, 1), min_size=m, max_size=m))
        groups += [g] * m
    return {"predictions": predictions, "references": references, "groups": groups}


@SETTINGS
@given(data=binary_classification())
def test_equalized_odds_matches_fairlearn(group_disparity, data):
    result = group_disparity.compute(**data)
    y, p = np.asarray(data["references"]), np.asarray(data["predictions"])
    g = pd.Series(data["groups"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = fairlearn_metrics.equalized_odds_difference(y, p, sensitive_features=g)
        tpr = fairlearn_metrics.MetricFrame(
            metrics=fairlearn_metrics.true_positive_rate, y_true=y, y_pred=p, sensitive_features=g
        )
        fpr = fairlearn_metrics.MetricFrame(
            metrics=fairlearn_metrics.false_positive_rate, y_true=y, y_pred=p, sensitive_features=g
        )
    assert result["equalized_odds_difference"] == pytest.approx(expected, abs=TOL)
    assert result["group_true_positive_rate"] == pytest.approx({str(k): v for k, v in tpr.by_group.items()}, abs=TOL)
    assert result["group_false_positive_rate"] == pytest.approx({str(k): v for k, v in fpr.by_group.items()}, abs=TOL)
    assert result["true_positive_rate_difference"] == pytest.approx(tpr.difference(), abs=TOL)
    assert result["false_positive_rate_difference"] == pytest.approx(fpr.difference(), abs=TOL)


def test_undefined_rates_are_nan_and_left_out(group_disparity):
    # Group "a" has no positives: its TPR is undefined and does not enter the TPR difference.
    result = group_disparity.compute(predictions=[0, 1, 0, 1], references=[0, 0, 0, 1], groups=["a", "a", "b", "b"])
    assert math.isnan(result["group_true_positive_rate"]["a"])
    assert result["group_true_positive_rate"]["b"] == 1.0
    assert result["true_positive_rate_difference"] == 0.0
    assert result["group_false_positive_rate"] == {"a": 0.5, "b": 0.0}
    assert result["equalized_odds_difference"] == 0.5


def test_binary_keys_only_for_binary_values(group_disparity):
    multiclass = group_disparity.compute(predictions=[0, 2], references=[0, 1], groups=[0, 1])
    assert "equalized_odds_difference" not in multiclass
    assert "equalized_odds_difference" in group_disparity.compute(predictions=[0, 1], references=[0, 1], groups=[0, 1])


def test_reference_and_loss_keys(group_disparity):
    result = group_disparity.compute(
        predictions=[2, 1, 1, 0, 1, 0],
        references=[2, 1, 0, 0, 1, 1],
        groups=["head", "head", "tail", "head", "head", "tail"],
        reference_predictions=[2, 1, 0, 0, 2, 0],
        losses=[0.1, 0.2, 1.5, 0.1, 0.4, 2.0],
        reference_losses=[0.1, 0.2, 0.4, 0.1, 0.2, 0.5],
    )
    assert result["group_accuracy"] == {"head": 1.0, "tail": 0.0}
    assert result["group_reference_accuracy"] == {"head": 0.75, "tail": 0.5}
    assert result["reference_accuracy"] == pytest.approx(4 / 6)
    assert result["group_accuracy_drop"] == {"head": -0.25, "tail": 0.5}
    assert result["accuracy_drop"] == pytest.approx(4 / 6 - 4 / 6)
    assert result["disparate_drop"] == 0.75
    assert result["group_flip_rate"] == {"head": 0.25, "tail": 0.5}
    assert result["flip_rate"] == pytest.approx(2 / 6)
    assert result["reference_accuracy_gap"] == 0.25
    assert result["gap_change"] == 0.75
    assert result["group_mean_loss"] == pytest.approx({"head": 0.2, "tail": 1.75})
    assert result["mean_loss"] == pytest.approx(4.3 / 6)
    assert result["group_reference_mean_loss"] == pytest.approx({"head": 0.15, "tail": 0.45})
    assert result["reference_mean_loss"] == pytest.approx(1.5 / 6)
    assert result["group_loss_increase"] == pytest.approx({"head": 0.05, "tail": 1.3})
    assert result["loss_increase"] == pytest.approx(2.8 / 6)
    assert "group_reference_mean_loss" not in group_disparity.compute(
        predictions=[0], references=[0], groups=[0], losses=[1.0]
    )


def test_group_order_and_names(group_disparity):
    ints = group_disparity.compute(predictions=[0] * 3, references=[0] * 3, groups=[10, 2, -1])
    strings = group_disparity.compute(predictions=[0] * 3, references=[0] * 3, groups=["10", "2", "-1"])
    assert list(ints["group_count"]) == ["-1", "2", "10"]  # numeric order, then str()
    assert list(strings["group_count"]) == ["-1", "10", "2"]  # strings stay strings: code-point order


@pytest.mark.parametrize(
    "groups",
    [np.array([3, 1, 3]), np.array(["x", "y", "x"]), (3.0, 1.0, 3.0), pd.Series(["x", "y", "x"]), [True, False, True]],
    ids=["int-array", "str-array", "integral-floats", "series", "bools"],
)
def test_accepted_group_containers(group_disparity, groups):
    result = group_disparity.compute(predictions=[1, 0, 0], references=[1, 0, 1], groups=groups)
    assert sum(result["group_count"].values()) == 3
    assert result["accuracy"] == pytest.approx(2 / 3)


def test_add_batch_matches_one_compute(group_disparity):
    rng = np.random.default_rng(1)
    p, y, g = rng.integers(0, 3, 50), rng.integers(0, 3, 50), rng.choice(["u", "v", "w"], 50)
    ref = rng.integers(0, 3, 50)
    whole = group_disparity.compute(predictions=p, references=y, groups=g, reference_predictions=ref)
    for start in range(0, 50, 16):
        group_disparity.add_batch(
            predictions=p[start : start + 16], references=y[start : start + 16], groups=g[start : start + 16]
        )
    assert group_disparity.compute(reference_predictions=ref) == whole


P, R, G = [0, 1, 1], [0, 1, 0], [1, 2, 1]
BAD_INPUTS = {
    "predictions-length": (dict(predictions=[0, 1], references=R, groups=G), ["predictions=2", "references=3"]),
    "groups-length": (dict(predictions=P, references=R, groups=[1, 2]), ["groups=2", "predictions=3"]),
    "empty": (dict(predictions=[], references=[], groups=[]), ["Empty input", "predictions"]),
    "none-in-groups": (dict(predictions=P, references=R, groups=[1, None, 2]), ["`groups`", "index 1", "None"]),
    "nan-in-groups": (dict(predictions=P, references=R, groups=[1.0, float("nan"), 2.0]), ["`groups`", "NaN"]),
    "mixed-groups": (dict(predictions=P, references=R, groups=[1, "a", 2]), ["`groups`", "mixes strings and ints"]),
    "none-in-references": (dict(predictions=P, references=[0, None, 1], groups=G), ["`references`", "None"]),
    "nan-in-predictions": (dict(predictions=[0, float("nan"), 1], references=R, groups=G), ["`predictions`", "nan"]),
    "float-predictions": (dict(predictions=[0, 1.5, 1], references=R, groups=G), ["`predictions`", "1.5"]),
    "inf-in-predictions": (dict(predictions=np.array([0.0, np.inf, 1.0]), references=R, groups=G), ["infinite"]),
    "fraction-in-groups": (dict(predictions=P, references=R, groups=[1, 2.5, 3]), ["`groups`", "2.5"]),
    "object-in-groups": (dict(predictions=P, references=R, groups=[(1,), (2,), (3,)]), ["`groups`", "neither"]),
    "inf-loss": (dict(predictions=P, references=R, groups=G, losses=[0.1, float("inf"), 0.2]), ["`losses`", "inf"]),
    "scalar-groups": (dict(predictions=P, references=R, groups="abc"), ["`groups`", "sequence"]),
    "logits": (dict(predictions=np.zeros((3, 2)), references=R, groups=G), ["`predictions`", "argmax"]),
    "missing-groups": (dict(predictions=P, references=R), ["`groups`", "missing"]),
    "confidence-1": (dict(predictions=P, references=R, groups=G, confidence_level=1.0), ["confidence_level", "1.0"]),
    "confidence-0": (dict(predictions=P, references=R, groups=G, confidence_level=0), ["confidence_level"]),
    "negative-n_boot": (dict(predictions=P, references=R, groups=G, n_boot=-1), ["n_boot", "-1"]),
    "float-n_boot": (dict(predictions=P, references=R, groups=G, n_boot=2.5), ["n_boot", "2.5"]),
    "bad-seed": (dict(predictions=P, references=R, groups=G, seed=-3), ["seed", "-3"]),
    "reference-length": (
        dict(predictions=P, references=R, groups=G, reference_predictions=[0, 1]),
        ["reference_predictions=2", "predictions=3"],
    ),
    "losses-length": (dict(predictions=P, references=R, groups=G, losses=[0.1]), ["losses=1"]),
    "reference-losses-length": (
        dict(predictions=P, references=R, groups=G, losses=[0.1] * 3, reference_losses=[0.1] * 4),
        ["reference_losses=4"],
    ),
    "reference-losses-alone": (dict(predictions=P, references=R, groups=G, reference_losses=[0.1] * 3), ["losses"]),
    "nan-loss": (dict(predictions=P, references=R, groups=G, losses=[0.1, float("nan"), 0.2]), ["`losses`", "NaN"]),
    "groups_2-length": (dict(predictions=P, references=R, groups=G, groups_2=["a"]), ["groups_2=1"]),
    "unknown-input": (dict(predictions=P, references=R, groups=G, weights=[1, 1, 1]), ["weights"]),
}


@pytest.mark.parametrize("kwargs, fragments", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_clear_error(group_disparity, kwargs, fragments):
    with pytest.raises(ValueError) as info:
        group_disparity.compute(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)
    # Nothing half-stored: the next good call works and sees only its own examples.
    assert group_disparity.compute(predictions=[1], references=[1], groups=["z"])["group_count"] == {"z": 1}


def test_bad_batches(group_disparity):
    with pytest.raises(ValueError, match="no examples were added"):
        group_disparity.compute()
    with pytest.raises(ValueError, match=r"\['losses'\].*arguments of compute"):
        group_disparity.add_batch(predictions=[0], references=[0], groups=[1], losses=[0.5])
    with pytest.raises(ValueError, match="`groups`.*None"):
        group_disparity.add(prediction=0, reference=0, groups=None)
    group_disparity.add_batch(predictions=[0, 1], references=[0, 1], groups=[1, 2])
    with pytest.raises(ValueError, match="`groups` were ints in an earlier batch"):
        group_disparity.add_batch(predictions=[0], references=[0], groups=["a"])
    group_disparity.add(prediction=1, reference=0, groups=3)
    with pytest.raises(ValueError, match="examples added=3, reference_predictions=2"):
        group_disparity.compute(reference_predictions=[0, 1])
    # Checked before evaluate finalizes anything: the examples are still there for a corrected call.
    assert group_disparity.compute(reference_predictions=[0, 1, 1])["group_count"] == {"1": 1, "2": 1, "3": 1}
    group_disparity.add_batch(predictions=[1], references=[1], groups=[5])
    with pytest.raises(ValueError, match=r"examples \(added \+ given\)=2, losses=1"):
        group_disparity.compute(predictions=[0], references=[0], groups=[6], losses=[1.0])
    assert group_disparity.compute(predictions=[0], references=[0], groups=[6], losses=[1.0, 3.0])[
        "group_mean_loss"
    ] == {"5": 1.0, "6": 3.0}
