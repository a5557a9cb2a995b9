# Copyright 2025 The hf_fairquant authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Group disparity metric: per-group accuracy, its gaps, and how a quantized model moves them.

Self-contained (numpy, datasets, evaluate only) so the folder can be pushed to the Hub on its own.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Group disparity splits a classifier's accuracy by a group column (a sensitive attribute, a data
source, a class family, ...) and summarises how unevenly it is spread: the accuracy of every group,
the worst group, the gap (max - min) and ratio (min / max) between groups, and, for binary tasks,
the equalized odds difference. Given the predictions of a reference model (e.g. the full-precision
model a quantized one was made from) it also reports how much each group lost (the accuracy drop)
and how many predictions flipped, which isolates the disparity the quantization itself caused.
Per-example losses give per-group mean losses. With `n_boot > 0` it adds percentile confidence
intervals from a bootstrap stratified by group.
"""


_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted class ids of the evaluated (e.g. quantized) model.
    references (`list` of `int`): Ground-truth class ids.
    groups (`list` of `int` or `list` of `str`): Group of every example, all ints or all strings.
        Group names in the outputs are `str(value)`, in sorted order (ints numerically).
    groups_2 (`list` of `int` or `list` of `str`, *optional*): A second group column; the group of
        an example is then the intersection `f"{g}×{g2}"` (U+00D7 MULTIPLICATION SIGN, no spaces),
        sorted by `(g, g2)`.
    reference_predictions (`list` of `int`, *optional*): Predictions of the reference
        (full-precision) model on the same examples, in the same order.
    losses (`list` of `float`, *optional*): Per-example loss of the evaluated model.
    reference_losses (`list` of `float`, *optional*): Per-example loss of the reference model;
        needs `losses`.
    n_boot (`int`, *optional*, defaults to 0): Bootstrap replicates for confidence intervals;
        0 turns them off.
    confidence_level (`float`, *optional*, defaults to 0.95): Coverage of the intervals, in (0, 1).
    seed (`int`, *optional*, defaults to 0): Seed of `numpy.random.default_rng` for the bootstrap.

    `groups` is a feature (it can go through `add_batch`); `groups_2`, `reference_predictions`,
    `losses` and `reference_losses` are arguments of `compute` and must cover every example added,
    in the order they were added.

Returns:
    accuracy (`float`): Overall accuracy.
    group_accuracy (`dict` of `str` to `float`): Accuracy of every group.
    group_error_rate, group_count, worst_group, worst_group_accuracy, accuracy_gap,
    accuracy_ratio, max_difference_to_overall: see the metric card.
    Binary tasks add true/false positive rates and the equalized odds difference; reference
    predictions add drops and flips; losses add mean losses; `n_boot > 0` adds `*_ci` intervals.
    The metric card (README.md) documents every key with its formula.

Examples:

    Example 1-Per-group accuracy and the gap between groups
        >>> gd = evaluate.load("group_disparity")
        >>> results = gd.compute(
        ...     predictions=[0, 1, 1, 0, 1, 0], references=[0, 1, 0, 0, 1, 1], groups=["a", "a", "a", "b", "b", "b"]
        ... )
        >>> results["group_accuracy"]
        {'a': 0.6666666666666666, 'b': 0.6666666666666666}
        >>> results["accuracy_gap"], results["accuracy_ratio"]
        (0.0, 1.0)

    Example 2-Against a full-precision reference model: which group lost accuracy
        >>> gd = evaluate.load("group_disparity")
        >>> results = gd.compute(
        ...     predictions=[0, 1, 1, 0, 1, 0],
        ...     references=[0, 1, 0, 0, 1, 1],
        ...     groups=[0, 0, 0, 1, 1, 1],
        ...     reference_predictions=[0, 1, 0, 0, 1, 0],
        ... )
        >>> results["group_accuracy_drop"], results["disparate_drop"], results["flip_rate"]
        ({'0': 0.33333333333333337, '1': 0.0}, 0.33333333333333337, 0.16666666666666666)

    Example 3-Intersections of two group columns
        >>> gd = evaluate.load("group_disparity")
        >>> results = gd.compute(
        ...     predictions=[1, 1, 0, 0], references=[1, 0, 0, 0], groups=["f", "f", "m", "m"], groups_2=[0, 1, 0, 1]
        ... )
        >>> results["group_accuracy"]
        {'f×0': 1.0, 'f×1': 0.0, 'm×0': 1.0, 'm×1': 1.0}
        >>> results["worst_group"]
        'f×1'
"""


_CITATION = """
@article{weerts2023fairlearn,
  title={Fairlearn: Assessing and Improving Fairness of AI Systems},
  author={Weerts, Hilde and Dud{\\'\\i}k, Miroslav and Edgar, Richard and Jalali, Adrin and Lutz, Roman
          and Madaio, Michael},
  journal={Journal of Machine Learning Research},
  volume={24},
  number={257},
  pages={1--8},
  year={2023}
}
@inproceedings{hardt2016equality,
  title={Equality of Opportunity in Supervised Learning},
  author={Hardt, Moritz and Price, Eric and Srebro, Nathan},
  booktitle={Advances in Neural Information Processing Systems},
  year={2016}
}
"""

#: Joins the two names of an intersectional group (U+00D7 MULTIPLICATION SIGN).
INTERSECTION_SEPARATOR = "\u00d7"

_PER_EXAMPLE_KWARGS = ("groups_2", "reference_predictions", "losses", "reference_losses")
_OPTION_KWARGS = ("n_boot", "confidence_level", "seed")


def _features(group_dtype: str) -> datasets.Features:
    return datasets.Features(
        {
            "predictions": datasets.Value("int64"),
            "references": datasets.Value("int64"),
            "groups": datasets.Value(group_dtype),
        }
    )


# ---------------------------------------------------------------------------------------------
# Validation: every check runs before evaluate stores anything, so a bad call leaves no state.
# ---------------------------------------------------------------------------------------------


def _describe(values: Any) -> str:
    text = repr(values)
    return text if len(text) <= 80 else text[:77] + "..."


def _to_array(name: str, values: Any) -> np.ndarray:
    """Turn one per-example input into a 1-D numpy array (object dtype when types are mixed)."""
    if values is None:
        raise ValueError(f"`{name}` is missing (got None).")
    if isinstance(values, (str, bytes)) or np.isscalar(values):
        raise ValueError(f"`{name}` must be a sequence with one value per example, got {_describe(values)}.")
    if hasattr(values, "detach"):  # a torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        arr = values
    else:
        values = list(values)
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    if arr.ndim != 1:
        hint = " Take the argmax of logits first." if name.endswith("predictions") else ""
        raise ValueError(f"`{name}` must be 1-D (one value per example), got shape {arr.shape}.{hint}")
    return arr


def _first_bad(name: str, arr: np.ndarray, mask: np.ndarray, what: str, allowed: str) -> None:
    if mask.any():
        idx = np.flatnonzero(mask)
        raise ValueError(
            f"`{name}` contains {what} at index {int(idx[0])} (value {arr[idx[0]]!r}; {idx.size} such "
            f"value(s) in all); {name} must be {allowed}."
        )


def _is_missing(value: Any) -> bool:
    return value is None or (
        isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and math.isnan(value)
    )


def _is_integral(value: Any) -> bool:
    return isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer())


def _mask(arr: np.ndarray, test) -> np.ndarray:
    return np.fromiter((test(v) for v in arr), dtype=bool, count=arr.size)


def _float_to_int(name: str, arr: np.ndarray, allowed: str) -> np.ndarray:
    """Integral floats (e.g. from a pandas column) become ints; NaN, inf and fractions are errors."""
    _first_bad(name, arr, ~np.isfinite(arr), "a NaN or infinite value", allowed)
    _first_bad(name, arr, arr != np.round(arr), "a non-integer number", allowed)
    return arr.astype(np.int64)


def _check_ints(name: str, values: Any) -> np.ndarray:
    """Class ids: integers (integral floats allowed), no None/NaN."""
    arr = _to_array(name, values)
    allowed = "integer class ids with no missing values"
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        return _float_to_int(name, arr, allowed)
    if arr.dtype.kind == "O":
        _first_bad(name, arr, _mask(arr, _is_missing), "a missing value (None or NaN)", allowed)
        _first_bad(name, arr, ~_mask(arr, _is_integral), "a non-integer value", allowed)
        return arr.astype(np.int64)
    raise ValueError(f"`{name}` must be {allowed}, got dtype {arr.dtype} ({_describe(arr[:5].tolist())}).")


def _check_groups(name: str, values: Any) -> np.ndarray:
    """Group ids: all ints or all strings, no None/NaN. Returns an int64 or str array."""
    arr = _to_array(name, values)
    allowed = "all ints or all strings, with no missing values"
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "f":
        return _float_to_int(name, arr, allowed)
    if arr.dtype.kind == "O":
        _first_bad(name, arr, _mask(arr, _is_missing), "a missing value (None or NaN)", allowed)
        is_str = _mask(arr, lambda v: isinstance(v, str))
        if is_str.all():
            return arr.astype(str)
        is_int = _mask(arr, _is_integral)
        if is_int.all():
            return arr.astype(np.int64)
        if is_str.any() and is_int.any():
            i, j = int(np.flatnonzero(is_str)[0]), int(np.flatnonzero(is_int)[0])
            raise ValueError(
                f"`{name}` mixes strings and ints (index {i}: {arr[i]!r}, index {j}: {arr[j]!r}); "
                f"{name} must be {allowed}."
            )
        _first_bad(name, arr, ~(is_str | is_int), "a value that is neither an int nor a string", allowed)
    raise ValueError(f"`{name}` must be {allowed}, got dtype {arr.dtype} ({_describe(arr[:5].tolist())}).")


def _check_floats(name: str, values: Any) -> np.ndarray:
    """Per-example losses: finite numbers."""
    arr = _to_array(name, values)
    allowed = "finite numbers"
    if arr.dtype.kind == "O":
        _first_bad(name, arr, _mask(arr, _is_missing), "a missing value (None or NaN)", allowed)
        _first_bad(name, arr, ~_mask(arr, lambda v: isinstance(v, numbers.Real)), "a non-numeric value", allowed)
    elif arr.dtype.kind not in "iubf":
        raise ValueError(f"`{name}` must be {allowed}, got dtype {arr.dtype} ({_describe(arr[:5].tolist())}).")
    arr = arr.astype(np.float64)
    _first_bad(name, arr, ~np.isfinite(arr), "a NaN or infinite value", allowed)
    return arr


def _check_lengths(lengths: dict[str, int]) -> int:
    """All per-example inputs must have the same, non-zero length."""
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise ValueError(f"Inputs must have one value per example, but their lengths differ: {listed}.")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"Empty input: {', '.join(lengths)} have no examples; need at least one.")
    return n


def _check_options(n_boot: Any, confidence_level: Any, seed: Any) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 0:
        raise ValueError(f"`n_boot` must be an int >= 0 (0 = no bootstrap), got {n_boot!r}.")
    if (
        isinstance(confidence_level, bool)
        or not isinstance(confidence_level, numbers.Real)
        or not 0.0 < float(confidence_level) < 1.0
    ):
        raise ValueError(f"`confidence_level` must be a number strictly between 0 and 1, got {confidence_level!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"`seed` must be an int >= 0 or None, got {seed!r}.")


def _group_kind(arr: np.ndarray) -> str:
    return "string" if arr.dtype.kind == "U" else "int64"


_CHECKERS = {
    "predictions": _check_ints,
    "references": _check_ints,
    "groups": _check_groups,
    "groups_2": _check_groups,
    "reference_predictions": _check_ints,
    "losses": _check_floats,
    "reference_losses": _check_floats,
}


def _check_compute_inputs(extra: dict[str, Any], n_examples: Optional[int], label: str) -> None:
    """Check the per-example arguments of `compute` against the number of examples (when it is known)."""
    if extra.get("reference_losses") is not None and extra.get("losses") is None:
        raise ValueError("`reference_losses` needs `losses` (the per-example losses of the evaluated model).")
    arrays = {k: _to_array(k, v) for k, v in extra.items() if v is not None}
    if n_examples is not None and arrays:
        _check_lengths({label: n_examples, **{k: len(v) for k, v in arrays.items()}})
    for name, arr in arrays.items():
        _CHECKERS[name](name, arr)


def _check_all(
    predictions: Any,
    references: Any,
    groups: Any,
    *,
    groups_2: Any = None,
    reference_predictions: Any = None,
    losses: Any = None,
    reference_losses: Any = None,
    n_boot: Any = 0,
    confidence_level: Any = 0.95,
    seed: Any = 0,
) -> dict[str, Optional[np.ndarray]]:
    """Validate every input of `compute`; return them as clean numpy arrays."""
    _check_options(n_boot, confidence_level, seed)
    if reference_losses is not None and losses is None:
        raise ValueError("`reference_losses` needs `losses` (the per-example losses of the evaluated model).")
    raw = {
        "predictions": predictions,
        "references": references,
        "groups": groups,
        "groups_2": groups_2,
        "reference_predictions": reference_predictions,
        "losses": losses,
        "reference_losses": reference_losses,
    }
    required = ("predictions", "references", "groups")
    arrays = {k: _to_array(k, v) for k, v in raw.items() if v is not None or k in required}
    _check_lengths({k: len(v) for k, v in arrays.items()})
    out: dict[str, Optional[np.ndarray]] = dict.fromkeys(raw)
    out.update({k: _CHECKERS[k](k, v) for k, v in arrays.items()})
    if out["groups_2"] is not None:
        for name in ("groups", "groups_2"):
            clash = [v for v in out[name].tolist() if INTERSECTION_SEPARATOR in str(v)]
            if clash:
                raise ValueError(
                    f"`{name}` value {clash[0]!r} contains {INTERSECTION_SEPARATOR!r}, the separator of "
                    f"intersection names: with `groups_2`, group values must not contain it."
                )
    return out


# ---------------------------------------------------------------------------------------------
# Math
# ---------------------------------------------------------------------------------------------


def _encode_groups(groups: np.ndarray, groups_2: Optional[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Integer codes 0..G-1 in sorted group order, and the group names."""
    uniq, codes = np.unique(groups, return_inverse=True)
    names = [str(u) for u in uniq.tolist()]
    if groups_2 is None:
        return codes.reshape(-1), names
    uniq2, codes2 = np.unique(groups_2, return_inverse=True)
    names2 = [str(u) for u in uniq2.tolist()]
    pairs, codes = np.unique(codes.reshape(-1) * len(uniq2) + codes2.reshape(-1), return_inverse=True)
    pair_names = [f"{names[p // len(uniq2)]}{INTERSECTION_SEPARATOR}{names2[p % len(uniq2)]}" for p in pairs.tolist()]
    return codes.reshape(-1), pair_names


def _spread(values: np.ndarray) -> float:
    """max - min over the defined (non-NaN) values; 0.0 when none is defined."""
    defined = values[~np.isnan(values)]
    return float(defined.max() - defined.min()) if defined.size else 0.0


def _ratio(lo: float, hi: float) -> float:
    return 1.0 if hi == 0.0 else lo / hi


def _by_group(names: list[str], values: np.ndarray, cast=float) -> dict[str, Any]:
    return {name: cast(v) for name, v in zip(names, values.tolist(), strict=True)}


def _rate(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _interval(samples: np.ndarray, confidence_level: float) -> np.ndarray:
    """Percentile interval over axis 0: shape (2, ...) holding (lo, hi)."""
    alpha = 1.0 - confidence_level
    return np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)


def _bootstrap(
    codes: np.ndarray,
    correct: np.ndarray,
    ref_correct: Optional[np.ndarray],
    n_groups: int,
    n_boot: int,
    confidence_level: float,
    seed: Optional[int],
) -> dict[str, np.ndarray]:
    """Stratified bootstrap of the accuracy statistics, vectorised over replicates.

    Every statistic here depends on a group's resample only through how many of its examples fall
    in each outcome cell (correct or not, and reference-correct or not). Resampling n_g examples
    with replacement puts a multinomial(n_g, cell shares) number of them in the cells, so drawing
    those counts directly is the same bootstrap, exactly, at O(n_boot x groups) cost.
    """
    cell = correct.astype(np.int64) + (2 * ref_correct.astype(np.int64) if ref_correct is not None else 0)
    n_cells = 4 if ref_correct is not None else 2
    counts = np.zeros((n_groups, n_cells))
    np.add.at(counts, (codes, cell), 1.0)
    n_g = counts.sum(axis=1)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_g.astype(np.int64), counts / n_g[:, None], size=(n_boot, n_groups))
    acc = (draws[..., 1] + (draws[..., 3] if n_cells == 4 else 0)) / n_g  # (B, G)
    samples = {
        "accuracy": (acc * n_g).sum(axis=1) / n_g.sum(),
        "group_accuracy": acc,
        "accuracy_gap": acc.max(axis=1) - acc.min(axis=1),
        "worst_group_accuracy": acc.min(axis=1),
    }
    if ref_correct is not None:
        ref_acc = (draws[..., 2] + draws[..., 3]) / n_g
        drop = ref_acc - acc
        samples["group_accuracy_drop"] = drop
        samples["disparate_drop"] = drop.max(axis=1) - drop.min(axis=1)
        samples["gap_change"] = samples["accuracy_gap"] - (ref_acc.max(axis=1) - ref_acc.min(axis=1))
    return {key: _interval(value, confidence_level) for key, value in samples.items()}


def group_disparity(
    predictions: np.ndarray,
    references: np.ndarray,
    groups: np.ndarray,
    groups_2: Optional[np.ndarray] = None,
    reference_predictions: Optional[np.ndarray] = None,
    losses: Optional[np.ndarray] = None,
    reference_losses: Optional[np.ndarray] = None,
    n_boot: int = 0,
    confidence_level: float = 0.95,
    seed: Optional[int] = 0,
) -> dict[str, Any]:
    """All the statistics, on validated numpy arrays (see `_check_all`)."""
    codes, names = _encode_groups(groups, groups_2)
    n_groups = len(names)
    count = np.bincount(codes, minlength=n_groups).astype(np.float64)
    correct = predictions == references
    acc_g = np.bincount(codes, weights=correct, minlength=n_groups) / count
    accuracy = float(correct.mean())
    worst = int(np.argmin(acc_g))
    acc_max, acc_min = float(acc_g.max()), float(acc_g.min())
    gap = acc_max - acc_min

    out: dict[str, Any] = {
        "accuracy": accuracy,
        "group_accuracy": _by_group(names, acc_g),
        "group_error_rate": _by_group(names, 1.0 - acc_g),
        "group_count": _by_group(names, count, int),
        "worst_group": names[worst],
        "worst_group_accuracy": acc_min,
        "accuracy_gap": gap,
        "accuracy_ratio": _ratio(acc_min, acc_max),
        "max_difference_to_overall": float(np.abs(acc_g - accuracy).max()),
    }

    labels = np.concatenate([predictions, references])
    if np.isin(labels, (0, 1)).all():
        pos, pred_pos = references == 1, predictions == 1
        tpr = _rate(np.bincount(codes, weights=pos & pred_pos, minlength=n_groups),
                    np.bincount(codes, weights=pos, minlength=n_groups))
        fpr = _rate(np.bincount(codes, weights=~pos & pred_pos, minlength=n_groups),
                    np.bincount(codes, weights=~pos, minlength=n_groups))
        out["group_true_positive_rate"] = _by_group(names, tpr)
        out["group_false_positive_rate"] = _by_group(names, fpr)
        out["true_positive_rate_difference"] = _spread(tpr)
        out["false_positive_rate_difference"] = _spread(fpr)
        out["equalized_odds_difference"] = max(out["true_positive_rate_difference"],
                                               out["false_positive_rate_difference"])

    ref_correct = None
    if reference_predictions is not None:
        ref_correct = reference_predictions == references
        ref_acc_g = np.bincount(codes, weights=ref_correct, minlength=n_groups) / count
        drop_g = ref_acc_g - acc_g
        flips = reference_predictions != predictions
        ref_gap = float(ref_acc_g.max() - ref_acc_g.min())
        out["reference_accuracy"] = float(ref_correct.mean())
        out["group_reference_accuracy"] = _by_group(names, ref_acc_g)
        out["accuracy_drop"] = out["reference_accuracy"] - accuracy
        out["group_accuracy_drop"] = _by_group(names, drop_g)
        out["disparate_drop"] = float(drop_g.max() - drop_g.min())
        out["flip_rate"] = float(flips.mean())
        out["group_flip_rate"] = _by_group(names, np.bincount(codes, weights=flips, minlength=n_groups) / count)
        out["reference_accuracy_gap"] = ref_gap
        out["gap_change"] = gap - ref_gap

    if losses is not None:
        loss_g = np.bincount(codes, weights=losses, minlength=n_groups) / count
        out["mean_loss"] = float(losses.mean())
        out["group_mean_loss"] = _by_group(names, loss_g)
        if reference_losses is not None:
            ref_loss_g = np.bincount(codes, weights=reference_losses, minlength=n_groups) / count
            out["reference_mean_loss"] = float(reference_losses.mean())
            out["group_reference_mean_loss"] = _by_group(names, ref_loss_g)
            out["loss_increase"] = out["mean_loss"] - out["reference_mean_loss"]
            out["group_loss_increase"] = _by_group(names, loss_g - ref_loss_g)

    if n_boot > 0:
        ci = _bootstrap(codes, correct, ref_correct, n_groups, n_boot, confidence_level, seed)
        for key, (lo, hi) in ci.items():
            if np.ndim(lo) == 0:
                out[f"{key}_ci"] = [float(lo), float(hi)]
            else:
                out[f"{key}_ci"] = {name: [float(a), float(b)] for name, a, b in zip(names, lo, hi, strict=True)}
        out["n_boot"] = int(n_boot)
        out["confidence_level"] = float(confidence_level)
    return out


# ---------------------------------------------------------------------------------------------
# The evaluate module
# ---------------------------------------------------------------------------------------------


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GroupDisparity(evaluate.Metric):
    """Per-group accuracy and disparity; see the module docstring and the metric card."""

    def _info(self) -> evaluate.MetricInfo:
        # Two feature options: evaluate picks the first one the first example fits. The string
        # option comes first because evaluate rejects a non-str for a string feature, whereas an
        # int feature would silently accept "3" as 3.
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[_features("string"), _features("int64")],
            reference_urls=[
                "https://fairlearn.org/main/user_guide/assessment/common_fairness_metrics.html",
                "https://arxiv.org/abs/2509.07222",
            ],
        )

    # evaluate stores inputs in Arrow before `_compute` sees them and would silently turn None
    # into null, 1.5 into 1, or a mixed [1, "a"] into an opaque error that also leaves a half-open
    # writer behind; an error raised inside `_compute` leaves its cache file locked. So these
    # overrides validate everything first, with messages that name the input, and keep their own
    # count of the examples added (and the kind of their groups) — only through evaluate's public
    # add/add_batch/compute — so that compute-only inputs can be checked against them up front.

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of examples; validated before evaluate stores anything."""
        arrays = self._check_feature_inputs(predictions, references, kwargs)
        super().add_batch(predictions=predictions, references=references, **kwargs)
        self._record_added(len(arrays["predictions"]), arrays["groups"])

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one example; validated before evaluate stores anything."""
        arrays = self._check_feature_inputs([prediction], [reference], {k: [v] for k, v in kwargs.items()})
        super().add(prediction=prediction, reference=reference, **kwargs)
        self._record_added(1, arrays["groups"])

    def _record_added(self, count: int, groups: np.ndarray) -> None:
        self._n_added = self._n_added_so_far() + count
        self._added_group_kind = _group_kind(groups)

    def compute(self, *, predictions=None, references=None, **kwargs) -> Optional[dict]:
        """Compute the metric; see the class docstring for the arguments."""
        allowed = {"groups", *_PER_EXAMPLE_KWARGS, *_OPTION_KWARGS}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise ValueError(
                f"Unknown input(s) {unknown}; group_disparity accepts predictions, references, "
                f"{', '.join(sorted(allowed))}."
            )
        options = {k: kwargs[k] for k in _OPTION_KWARGS if k in kwargs}
        _check_options(**{"n_boot": 0, "confidence_level": 0.95, "seed": 0, **options})
        n_added = self._n_added_so_far()
        if predictions is not None or references is not None or kwargs.get("groups") is not None:
            arrays = self._check_feature_inputs(predictions, references, {"groups": kwargs.get("groups")})
            n_examples = n_added + len(arrays["predictions"])
            label = "predictions" if n_added == 0 else "examples (added + given)"
        elif n_added == 0:
            raise ValueError(
                "Empty input: no examples were added; pass predictions, references and groups to "
                "compute() or add_batch()."
            )
        else:
            n_examples, label = n_added, "examples added"
        # With several processes the examples of the others are only known after gathering.
        known = n_examples if self.num_process == 1 else None
        _check_compute_inputs({k: kwargs.get(k) for k in _PER_EXAMPLE_KWARGS}, known, label)
        try:
            return super().compute(predictions=predictions, references=references, **kwargs)
        finally:
            self._n_added, self._added_group_kind = 0, None

    def _n_added_so_far(self) -> int:
        return getattr(self, "_n_added", 0)

    def _check_feature_inputs(self, predictions: Any, references: Any, kwargs: dict) -> dict[str, Any]:
        """Validate what add/add_batch store: predictions, references, groups."""
        unknown = sorted(set(kwargs) - {"groups"})
        if unknown:
            hint = " (they are arguments of compute())" if set(unknown) <= set(_PER_EXAMPLE_KWARGS) else ""
            raise ValueError(
                f"Unknown input(s) {unknown} for add/add_batch{hint}; it takes predictions, references, groups."
            )
        arrays = _check_all(predictions, references, kwargs.get("groups"))
        self._check_same_group_kind(arrays["groups"])
        return arrays

    def _check_same_group_kind(self, groups: np.ndarray) -> None:
        """Batches already stored fixed the groups' kind (ints or strings); later ones must match."""
        kind = getattr(self, "_added_group_kind", None)
        if self._n_added_so_far() and kind is not None and kind != _group_kind(groups):
            had = "strings" if kind == "string" else "ints"
            raise ValueError(
                f"`groups` were {had} in an earlier batch; all batches must use the same kind "
                f"(all ints or all strings), got {_describe(groups.tolist())}."
            )

    def _compute(
        self,
        predictions,
        references,
        groups,
        groups_2=None,
        reference_predictions=None,
        losses=None,
        reference_losses=None,
        n_boot: int = 0,
        confidence_level: float = 0.95,
        seed: Optional[int] = 0,
    ) -> dict[str, Any]:
        arrays = _check_all(
            predictions,
            references,
            groups,
            groups_2=groups_2,
            reference_predictions=reference_predictions,
            losses=losses,
            reference_losses=reference_losses,
            n_boot=n_boot,
            confidence_level=confidence_level,
            seed=seed,
        )
        return group_disparity(**arrays, n_boot=int(n_boot), confidence_level=float(confidence_level), seed=seed)
