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

Self-contained (numpy, scipy, datasets, evaluate only) so the folder can be pushed to the Hub
on its own (``hf-fairquant push-metric``) and loaded with ``evaluate.load("<namespace>/<name>")``.

Statistics of a paired comparison (``reference_predictions`` given), per group:

* **Exact McNemar test.** Only the discordant pairs carry information about a change in accuracy:
  ``b`` examples the reference got right and the evaluated model gets wrong, ``c`` the reverse.
  Under "no change" ``b ~ Binomial(b + c, 1/2)``; the p-value is the exact two-sided binomial
  p-value (``scipy.stats.binomtest``), 1.0 when ``b + c = 0``. p-values are adjusted across groups
  by Holm (family-wise error, the default) or Benjamini-Hochberg (false discovery rate).
* **Minimum detectable drop** (power 0.8): the smallest drop ``delta`` that this test, at the
  per-group level ``alpha / m`` (``alpha`` alone with ``p_adjust="none"``), detects with
  probability 0.8 in a group of this size, computed exactly from binomial sums (see ``_power``),
  assuming the discordant-pair rate stays as observed (``psi = max(psi_hat, delta)``).

Intervals (``n_boot > 0``) come from one group-stratified, paired bootstrap: every statistic here
depends on a group's resample only through its multinomial counts of (reference correct,
correct) cells, so those counts are drawn directly. Each interval is the **hull of the percentile
and the basic bootstrap intervals**, ``[min(q_lo, 2t - q_hi), max(q_hi, 2t - q_lo)]`` (``t`` the
estimate, ``q`` the bootstrap quantiles), clipped to the statistic's range. Why this and not the
percentile interval or BCa:

* It always contains its estimate (if ``t < q_lo`` then ``2t - q_hi < t``; symmetrically above),
  whereas a percentile interval of a max - min statistic excludes it whenever fewer than
  ``(1 - c)/2`` of the replicates fall below the estimate (the "gap 0.0 [0.1, 3.7]" case). BCa
  does not help there: its levels are ``Phi(2 z0 + z_{(1 -/+ c)/2})`` (without acceleration)
  with ``z0 = Phi^-1(share of replicates below t)``, so its upper end drops below ``t`` exactly
  when ``z0 < z_{(1-c)/2}``, the same case.
* For smooth statistics (a group's accuracy or drop, a well separated disparate drop) the two
  intervals nearly coincide and coverage is nominal; the seeded simulation in
  ``tests/metrics/test_group_disparity_coverage.py`` checks it, ``benchmarks/metric_coverage.py``
  measures the card's tables.
* A max - min statistic (gap, disparate drop) is biased upwards when groups are close: the
  percentile interval then never holds a true 0 (measured: 0 % at exact ties), while the basic
  end reaches down to it (90-91 % for 3 tied groups). No bootstrap is exact at a tie (the max is
  not differentiable there): coverage at exact ties falls with the number of tied groups (74-77 %
  for 7); such intervals still contain their estimate.

Groups with fewer than ``min_group_size`` examples get no interval (None): a bootstrap of a
handful of examples gives intervals far below their nominal coverage (see the card's table).

**Language-model mode** (no ``predictions``/``references``; ``compute(groups=..., losses=...,
loss_weights=..., reference_losses=..., agreement=...)``): per-example mean losses (a causal LM's
mean next-token NLL) weighted by their ``loss_weights`` (scored tokens), so a group's mean loss is
its total NLL over its total tokens and its perplexity ``exp`` of that; the paired loss increase
(evaluated − reference, the same examples) per group and its spread over groups; the
token-weighted share of top-1 predictions that agree with the reference (``agreement``). Intervals
come from the same group-stratified, paired bootstrap of examples (a resampled example brings its
tokens, both models' losses and its agreement: ratio estimators, drawn as indices), as hulls of
the percentile and basic intervals; a perplexity interval is ``exp`` of its mean-loss interval.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import datasets
import evaluate
import numpy as np
from scipy import optimize, special, stats

_DESCRIPTION = """
Group disparity splits a classifier's accuracy by a group column (a sensitive attribute, a data
source, a class family, ...) and summarises how unevenly it is spread: the accuracy of every group,
the worst group, the gap (max - min) and ratio (min / max) between groups, and, for binary tasks,
the equalized odds difference. Given the predictions of a reference model (e.g. the full-precision
model a quantized one was made from) it also reports how much each group lost (the accuracy drop)
and how many predictions flipped, which isolates the disparity the quantization itself caused; per
group an exact McNemar test (Holm or Benjamini-Hochberg across groups) says whether the drop is more
than chance, and a minimum detectable drop how small a drop the group's data could have shown.
Per-example losses give per-group mean losses (token-weighted with `loss_weights`). With
`n_boot > 0` it adds confidence intervals from a paired bootstrap stratified by group, which always
contain their estimate; groups under `min_group_size` examples get none. Without predictions and
references (language-model mode) it reports per-group token-weighted mean NLL and perplexity, the
paired NLL increase against a reference model with its spread over groups, and token agreement.
"""


_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted class ids (>= 0) of the evaluated (e.g. quantized) model.
    references (`list` of `int`): Ground-truth class ids (>= 0). Ignored labels (-100 or -1) are
        refused: drop those examples from every input first (hf_fairquant's one rule).
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
    loss_weights (`list` of `float`, *optional*): Per-example weights (> 0) of the mean losses,
        e.g. token counts for per-token means; needs `losses`.
    n_boot (`int`, *optional*, defaults to 0): Bootstrap replicates for confidence intervals;
        0 turns them off.
    confidence_level (`float`, *optional*, defaults to 0.95): Coverage of the intervals, in (0, 1);
        the tests' significance level is 1 - confidence_level.
    seed (`int`, *optional*, defaults to 0): Seed of `numpy.random.default_rng` for the bootstrap.
    p_adjust (`str`, *optional*, defaults to "holm"): Adjustment of the per-group McNemar p-values:
        "holm", "bh" (Benjamini-Hochberg) or "none".
    min_group_size (`int`, *optional*, defaults to 30): Groups with fewer examples get no interval.

    `groups` is a feature (it can go through `add_batch`); `groups_2`, `reference_predictions`,
    `losses`, `reference_losses` and `loss_weights` are arguments of `compute` and must cover every
    example added, in the order they were added.

    Language-model mode: call `compute` with no `predictions` and no `references` (and nothing
    added) but `groups` and `losses` (per-example mean NLL); optional `loss_weights` (scored
    tokens per example), `reference_losses` (the reference model's, same examples), `agreement`
    (per example, the share of its tokens whose top-1 prediction equals the reference model's, in
    [0, 1]), `groups_2` and the options (`p_adjust` does not apply).

Returns:
    accuracy (`float`): Overall accuracy.
    group_accuracy (`dict` of `str` to `float`): Accuracy of every group.
    group_error_rate, group_count, worst_group, worst_group_accuracy, accuracy_gap,
    accuracy_ratio, max_difference_to_overall: see the metric card.
    Binary tasks add true/false positive rates and the equalized odds difference; reference
    predictions add drops, flips, exact McNemar p-values per group (`group_mcnemar_p_value`,
    `group_mcnemar_p_adjusted`, `group_mcnemar_significant`) and minimum detectable drops
    (`group_min_detectable_drop`); losses add mean losses; `n_boot > 0` adds `*_ci` intervals
    (None for groups in `groups_too_small_for_interval`). The metric card (README.md) documents
    every key with its formula.

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

    Example 4-Is a group's drop more than chance? And how small a drop could its data show?
        >>> gd = evaluate.load("group_disparity")
        >>> results = gd.compute(
        ...     predictions=[0] * 60 + [1] * 12 + [0] * 28,
        ...     references=[0] * 100,
        ...     groups=["head"] * 60 + ["tail"] * 40,
        ...     reference_predictions=[0] * 100,
        ... )
        >>> results["group_mcnemar_p_adjusted"], results["group_mcnemar_significant"]
        ({'head': 1.0, 'tail': 0.0009765625}, {'head': False, 'tail': True})
        >>> {g: round(v, 3) for g, v in results["group_min_detectable_drop"].items()}
        {'head': 0.147, 'tail': 0.257}

    Example 5-A language model: per-group perplexity and the NLL increase of a quantized model
        >>> gd = evaluate.load("group_disparity")
        >>> results = gd.compute(
        ...     groups=["de", "de", "ja"],
        ...     losses=[2.0, 3.0, 4.0],
        ...     loss_weights=[10, 30, 20],
        ...     reference_losses=[2.0, 2.5, 3.0],
        ... )
        >>> results["group_mean_loss"], results["group_loss_increase"], results["disparate_loss_increase"]
        ({'de': 2.75, 'ja': 4.0}, {'de': 0.375, 'ja': 1.0}, 0.625)
        >>> round(results["group_perplexity"]["ja"], 2)
        54.6
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
@article{mcnemar1947note,
  title={Note on the sampling error of the difference between correlated proportions or percentages},
  author={McNemar, Quinn},
  journal={Psychometrika},
  volume={12},
  number={2},
  pages={153--157},
  year={1947}
}
@article{holm1979simple,
  title={A Simple Sequentially Rejective Multiple Test Procedure},
  author={Holm, Sture},
  journal={Scandinavian Journal of Statistics},
  volume={6},
  number={2},
  pages={65--70},
  year={1979}
}
@article{benjamini1995controlling,
  title={Controlling the False Discovery Rate: A Practical and Powerful Approach to Multiple Testing},
  author={Benjamini, Yoav and Hochberg, Yosef},
  journal={Journal of the Royal Statistical Society: Series B},
  volume={57},
  number={1},
  pages={289--300},
  year={1995}
}
@book{davison1997bootstrap,
  title={Bootstrap Methods and their Application},
  author={Davison, Anthony C. and Hinkley, David V.},
  publisher={Cambridge University Press},
  year={1997}
}
"""

#: Joins the two names of an intersectional group (U+00D7 MULTIPLICATION SIGN).
INTERSECTION_SEPARATOR = "\u00d7"

_PER_EXAMPLE_KWARGS = ("groups_2", "reference_predictions", "losses", "reference_losses", "loss_weights")
_OPTION_KWARGS = ("n_boot", "confidence_level", "seed", "p_adjust", "min_group_size")
#: Per-example inputs of the language-model mode (no predictions, no references).
_LM_KWARGS = ("groups", "groups_2", "losses", "reference_losses", "loss_weights", "agreement")

#: Corrections of the per-group McNemar p-values for testing every group (`p_adjust`).
P_ADJUST_METHODS = ("holm", "bh", "none")
#: Default `min_group_size`: smaller groups get no bootstrap interval. Measured by
#: benchmarks/metric_coverage.py (metric card, "How good are the intervals"): a group at accuracy
#: 0.8 (9 % discordant pairs) gets a 95 % accuracy interval that holds the truth 92.8 % of the time
#: at 30 examples, 90.0 % at 20, 85.3 % at 10, 62.1 % at 5; its drop interval 90.5 % at 30, 84.0 %
#: at 20, 60.6 % at 10. Below 30 a "95 %" interval misleads more than it informs.
DEFAULT_MIN_GROUP_SIZE = 30
#: Power at which the minimum detectable drop is computed.
MDE_POWER = 0.8


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
    """Class ids: integers >= 0 (integral floats allowed), no None/NaN."""
    arr = _to_array(name, values)
    allowed = "integer class ids with no missing values"
    if arr.dtype.kind in "iub":
        out = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        out = _float_to_int(name, arr, allowed)
    elif arr.dtype.kind == "O":
        _first_bad(name, arr, _mask(arr, _is_missing), "a missing value (None or NaN)", allowed)
        _first_bad(name, arr, ~_mask(arr, _is_integral), "a non-integer value", allowed)
        out = arr.astype(np.int64)
    else:
        raise ValueError(f"`{name}` must be {allowed}, got dtype {arr.dtype} ({_describe(arr[:5].tolist())}).")
    # One rule for ignored labels across hf_fairquant (audit and FairQuantTrainer refuse them too):
    # an example whose label is ignored (-100, transformers' ignore index, or -1) has no accuracy
    # to count, and dropping it here would silently shrink its group and misalign the per-example
    # arguments of compute(); so it is refused, and the caller drops it from every input.
    _first_bad(
        name, out, out < 0, "a negative class id", "class ids >= 0: drop the examples whose label is ignored "
        "(-100 in transformers, or -1) from every input before calling the metric, as hf_fairquant's audit "
        "and FairQuantTrainer require too",
    )
    return out


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


def _check_weights(name: str, values: Any) -> np.ndarray:
    """Per-example weights of the mean losses (e.g. token counts): finite and > 0."""
    arr = _check_floats(name, values)
    _first_bad(name, arr, arr <= 0, "a weight <= 0", "finite numbers > 0 (drop examples with nothing to score)")
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


def _check_options(
    n_boot: Any, confidence_level: Any, seed: Any, p_adjust: Any = "holm", min_group_size: Any = DEFAULT_MIN_GROUP_SIZE
) -> None:
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
    if not isinstance(p_adjust, str) or p_adjust not in P_ADJUST_METHODS:
        raise ValueError(
            f"`p_adjust` must be one of {list(P_ADJUST_METHODS)} (Holm, Benjamini-Hochberg, no correction), "
            f"got {p_adjust!r}."
        )
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, numbers.Integral) or min_group_size < 0:
        raise ValueError(
            f"`min_group_size` must be an int >= 0 (groups with fewer examples get no interval; 0 or 1: every "
            f"group gets one), got {min_group_size!r}."
        )


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
    "loss_weights": _check_weights,
}


def _check_compute_inputs(extra: dict[str, Any], n_examples: Optional[int], label: str) -> None:
    """Check the per-example arguments of `compute` against the number of examples (when it is known)."""
    for name in ("reference_losses", "loss_weights"):
        if extra.get(name) is not None and extra.get("losses") is None:
            raise ValueError(f"`{name}` needs `losses` (the per-example losses of the evaluated model).")
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
    loss_weights: Any = None,
    n_boot: Any = 0,
    confidence_level: Any = 0.95,
    seed: Any = 0,
    p_adjust: Any = "holm",
    min_group_size: Any = DEFAULT_MIN_GROUP_SIZE,
) -> dict[str, Optional[np.ndarray]]:
    """Validate every input of `compute`; return them as clean numpy arrays."""
    _check_options(n_boot, confidence_level, seed, p_adjust, min_group_size)
    for name, value in (("reference_losses", reference_losses), ("loss_weights", loss_weights)):
        if value is not None and losses is None:
            raise ValueError(f"`{name}` needs `losses` (the per-example losses of the evaluated model).")
    raw = {
        "predictions": predictions,
        "references": references,
        "groups": groups,
        "groups_2": groups_2,
        "reference_predictions": reference_predictions,
        "losses": losses,
        "reference_losses": reference_losses,
        "loss_weights": loss_weights,
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


#: Range of every bootstrapped statistic: intervals are clipped to it.
_BOUNDS = {
    "accuracy": (0.0, 1.0),
    "group_accuracy": (0.0, 1.0),
    "accuracy_gap": (0.0, 1.0),
    "worst_group_accuracy": (0.0, 1.0),
    "group_accuracy_drop": (-1.0, 1.0),
    "accuracy_drop": (-1.0, 1.0),
    "disparate_drop": (0.0, 2.0),
    "gap_change": (-1.0, 1.0),
}
#: Statistics of one group each; the others combine all groups (or are overall).
_PER_GROUP = ("group_accuracy", "group_accuracy_drop")
_ACROSS_GROUPS = ("accuracy_gap", "worst_group_accuracy", "disparate_drop", "gap_change")


def _replicates(
    codes: np.ndarray,
    correct: np.ndarray,
    ref_correct: Optional[np.ndarray],
    n_groups: int,
    n_boot: int,
    seed: Optional[int],
) -> dict[str, np.ndarray]:
    """Stratified, paired bootstrap replicates of the accuracy statistics, vectorised over replicates.

    Every statistic here depends on a group's resample only through how many of its examples fall
    in each outcome cell (correct or not, and reference-correct or not). Resampling n_g examples
    with replacement puts a multinomial(n_g, cell shares) number of them in the cells, so drawing
    those counts directly is the same bootstrap, exactly, at O(n_boot x groups) cost. The cells
    pair each example's two outcomes, so the drops are bootstrapped paired.
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
        samples["accuracy_drop"] = (drop * n_g).sum(axis=1) / n_g.sum()
        samples["disparate_drop"] = drop.max(axis=1) - drop.min(axis=1)
        samples["gap_change"] = samples["accuracy_gap"] - (ref_acc.max(axis=1) - ref_acc.min(axis=1))
    return samples


def _hull_interval(
    samples: np.ndarray, estimate: np.ndarray, confidence_level: float, bounds: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """The hull of the percentile and basic bootstrap intervals over axis 0, clipped to ``bounds``.

    Percentile: ``[q_lo, q_hi]``, the ``(1 - c)/2`` and ``(1 + c)/2`` quantiles of the replicates.
    Basic (reverse percentile): ``[2t - q_hi, 2t - q_lo]``. Their hull contains the estimate
    ``t`` whatever the replicates (see the module docstring for why this interval).
    """
    alpha = 1.0 - confidence_level
    q_lo, q_hi = np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
    estimate = np.asarray(estimate, dtype=np.float64)
    lo = np.minimum(np.minimum(q_lo, 2.0 * estimate - q_hi), estimate)
    hi = np.maximum(np.maximum(q_hi, 2.0 * estimate - q_lo), estimate)
    return np.clip(lo, *bounds), np.clip(hi, *bounds)


def _mcnemar_p_value(newly_wrong: int, newly_right: int) -> float:
    """Exact two-sided McNemar test: ``b ~ Binomial(b + c, 1/2)`` under no change; 1.0 when b + c = 0."""
    discordant = newly_wrong + newly_right
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(newly_wrong, discordant, 0.5, alternative="two-sided").pvalue)


def _adjust_p_values(p_values: np.ndarray, method: str) -> np.ndarray:
    """Holm's step-down (family-wise error) or Benjamini-Hochberg's step-up (false discovery rate)
    adjusted p-values, in the input order; ``"none"`` returns them unchanged."""
    m = p_values.size
    if method == "none" or m == 0:
        return p_values.astype(np.float64)
    order = np.argsort(p_values, kind="stable")
    ranked = p_values[order]
    if method == "holm":  # max over j <= i of (m - j + 1) p_(j)
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    else:  # "bh": min over j >= i of m p_(j) / j
        adjusted = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
        adjusted = np.minimum(1.0, adjusted)
    out = np.empty(m)
    out[order] = adjusted
    return out


def _mcnemar_critical(discordant: np.ndarray, alpha: float) -> np.ndarray:
    """Per number of discordant pairs d: the largest k with ``2 P(B <= k) <= alpha``, B ~ Bin(d, 1/2)
    (the exact test rejects when b <= k or b >= d - k); -1 when no b can reach ``alpha``.

    Starts from the normal approximation and steps to the exact value (``scipy.special.bdtr`` is
    the binomial CDF); equal to ``binomtest(b, d).pvalue <= alpha`` (a test checks it)."""
    d = np.asarray(discordant, dtype=np.int64)
    level = alpha / 2.0 * (1.0 + 1e-9)  # binomtest's own relative tolerance is 1e-7
    k = np.floor(d / 2.0 + stats.norm.ppf(alpha / 2.0) * np.sqrt(d) / 2.0).astype(np.int64)
    k = np.clip(k, -1, d)
    while True:
        up = (k + 1 <= d) & (special.bdtr(np.maximum(k + 1, 0), d, 0.5) <= level)
        down = (k >= 0) & (special.bdtr(np.maximum(k, 0), d, 0.5) > level)
        if not (up.any() or down.any()):
            return k
        k = k + up.astype(np.int64) - down.astype(np.int64)


def _binom_pmf(k: np.ndarray, n: int, p: float) -> np.ndarray:
    """Binomial probabilities P(K = k), K ~ Bin(n, p), via log-gamma (``0 log 0 = 0``)."""
    return np.exp(
        special.gammaln(n + 1.0) - special.gammaln(k + 1.0) - special.gammaln(n - k + 1.0)
        + special.xlogy(k, p) + special.xlog1py(n - k, -p)
    )


def _power(n: int, psi_hat: float, delta: float, alpha: float, critical: Optional[np.ndarray] = None) -> float:
    """Power of the exact two-sided McNemar test at level ``alpha`` on ``n`` pairs when the true drop
    is ``delta`` > 0 and the discordant-pair rate is ``psi = max(psi_hat, delta)``.

    ``sum_d Bin(d; n, psi) * P(b <= k_d or b >= d - k_d | b ~ Bin(d, 1/2 + delta / (2 psi)))``: the
    number of discordant pairs d is binomial, and given d the losses among them are binomial with
    the share that makes the expected drop ``delta``. Only the d within 8 standard deviations
    (plus 10) of ``n psi`` are summed (the rest weigh < 1e-12). ``critical``: a cache of the
    ``k_d`` for d = 0..n (-2 where not computed yet), filled as needed.
    """
    psi = max(psi_hat, delta)
    spread = 8.0 * math.sqrt(n * psi * (1.0 - psi)) + 10.0
    d = np.arange(max(0, math.floor(n * psi - spread)), min(n, math.ceil(n * psi + spread)) + 1, dtype=np.int64)
    if critical is None:
        k = _mcnemar_critical(d, alpha)
    else:
        todo = d[critical[d] == -2]
        critical[todo] = _mcnemar_critical(todo, alpha)
        k = critical[d]
    share = min(1.0, 0.5 + delta / (2.0 * psi))
    possible = k >= 0  # else no b rejects
    upper = special.bdtrc(np.maximum(d - k - 1, 0), d, share)  # P(b >= d - k)
    lower = special.bdtr(np.maximum(k, 0), d, share)  # P(b <= k)
    reject = np.where(possible, upper + lower, 0.0)
    return float(np.sum(_binom_pmf(d, n, psi) * reject))


def _min_detectable_drop(n: int, discordant: int, alpha: float, power: float = MDE_POWER) -> Optional[float]:
    """Smallest drop the exact McNemar test at level ``alpha`` detects with probability ``power`` on
    ``n`` pairs with ``discordant`` observed discordant pairs (to 1e-7); None when even a drop of 1
    (every example lost) is not detected that often."""
    if n == 0:
        return None
    psi_hat = discordant / n
    critical = np.full(n + 1, -2, dtype=np.int64)
    if _power(n, psi_hat, 1.0, alpha, critical) < power:
        return None
    # The power grows continuously with the drop, from about alpha / 2 at 0: one root in (0, 1].
    return float(optimize.brentq(lambda delta: _power(n, psi_hat, delta, alpha, critical) - power, 1e-12, 1.0,
                                 xtol=1e-7))


def _paired_tests(
    names: list[str],
    codes: np.ndarray,
    count: np.ndarray,
    correct: np.ndarray,
    ref_correct: np.ndarray,
    alpha: float,
    p_adjust: str,
) -> dict[str, Any]:
    """Discordant pairs, exact McNemar tests (adjusted across groups) and minimum detectable drops."""
    n_groups = len(names)
    wrong = np.bincount(codes, weights=ref_correct & ~correct, minlength=n_groups).astype(np.int64)
    right = np.bincount(codes, weights=~ref_correct & correct, minlength=n_groups).astype(np.int64)
    p_values = np.array([_mcnemar_p_value(int(b), int(c)) for b, c in zip(wrong, right, strict=True)])
    adjusted = _adjust_p_values(p_values, p_adjust)
    group_alpha = alpha / n_groups if p_adjust != "none" else alpha
    total_wrong, total_right = int(wrong.sum()), int(right.sum())
    return {
        "newly_wrong": total_wrong,
        "newly_right": total_right,
        "group_newly_wrong": _by_group(names, wrong, int),
        "group_newly_right": _by_group(names, right, int),
        "mcnemar_p_value": _mcnemar_p_value(total_wrong, total_right),
        "group_mcnemar_p_value": _by_group(names, p_values),
        "group_mcnemar_p_adjusted": _by_group(names, adjusted),
        "group_mcnemar_significant": _by_group(names, adjusted <= alpha, bool),
        "p_adjust": p_adjust,
        "min_detectable_drop": _min_detectable_drop(int(count.sum()), total_wrong + total_right, alpha),
        "group_min_detectable_drop": {
            name: _min_detectable_drop(int(n), int(b + c), group_alpha)
            for name, n, b, c in zip(names, count, wrong, right, strict=True)
        },
    }


def _weighted_mean(codes: np.ndarray, values: np.ndarray, weights: Optional[np.ndarray], n_groups: int):
    """(overall mean, per-group means) of ``values``, weighted by ``weights`` when given."""
    w = np.ones_like(values) if weights is None else weights
    per_group = np.bincount(codes, weights=values * w, minlength=n_groups) / np.bincount(
        codes, weights=w, minlength=n_groups
    )
    overall = float(values.mean()) if weights is None else float((values * w).sum() / w.sum())
    return overall, per_group


def group_disparity(
    predictions: np.ndarray,
    references: np.ndarray,
    groups: np.ndarray,
    groups_2: Optional[np.ndarray] = None,
    reference_predictions: Optional[np.ndarray] = None,
    losses: Optional[np.ndarray] = None,
    reference_losses: Optional[np.ndarray] = None,
    loss_weights: Optional[np.ndarray] = None,
    n_boot: int = 0,
    confidence_level: float = 0.95,
    seed: Optional[int] = 0,
    p_adjust: str = "holm",
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
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
    estimates: dict[str, Any] = {
        "accuracy": accuracy, "group_accuracy": acc_g, "accuracy_gap": gap, "worst_group_accuracy": acc_min,
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
    alpha = 1.0 - confidence_level
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
        out.update(_paired_tests(names, codes, count, correct, ref_correct, alpha, p_adjust))
        estimates.update(
            group_accuracy_drop=drop_g, accuracy_drop=out["accuracy_drop"], disparate_drop=out["disparate_drop"],
            gap_change=out["gap_change"],
        )

    if losses is not None:
        mean_loss, loss_g = _weighted_mean(codes, losses, loss_weights, n_groups)
        out["mean_loss"] = mean_loss
        out["group_mean_loss"] = _by_group(names, loss_g)
        if reference_losses is not None:
            ref_mean_loss, ref_loss_g = _weighted_mean(codes, reference_losses, loss_weights, n_groups)
            out["reference_mean_loss"] = ref_mean_loss
            out["group_reference_mean_loss"] = _by_group(names, ref_loss_g)
            out["loss_increase"] = out["mean_loss"] - out["reference_mean_loss"]
            out["group_loss_increase"] = _by_group(names, loss_g - ref_loss_g)

    if n_boot > 0:
        samples = _replicates(codes, correct, ref_correct, n_groups, n_boot, seed)
        too_small = count < min_group_size
        for key, replicates in samples.items():
            lo, hi = _hull_interval(replicates, estimates[key], confidence_level, _BOUNDS[key])
            if key in _PER_GROUP:
                out[f"{key}_ci"] = {
                    name: None if small else [float(a), float(b)]
                    for name, small, a, b in zip(names, too_small, lo, hi, strict=True)
                }
            elif (key in _ACROSS_GROUPS and too_small.any()) or count.sum() < min_group_size:
                out[f"{key}_ci"] = None
            else:
                out[f"{key}_ci"] = [float(lo), float(hi)]
        out["n_boot"] = int(n_boot)
        out["confidence_level"] = float(confidence_level)
        out["min_group_size"] = int(min_group_size)
        out["groups_too_small_for_interval"] = [name for name, small in zip(names, too_small, strict=True) if small]
    return out


# ---------------------------------------------------------------------------------------------
# Language-model mode: per-group token-weighted NLL, perplexity, paired NLL increase, agreement
# ---------------------------------------------------------------------------------------------

#: Range of every bootstrapped statistic of the language-model mode (intervals are clipped to it).
_LM_BOUNDS = {
    "mean_loss": (-np.inf, np.inf),
    "group_mean_loss": (-np.inf, np.inf),
    "loss_gap": (0.0, np.inf),
    "worst_group_loss": (-np.inf, np.inf),
    "perplexity_gap": (0.0, np.inf),
    "loss_increase": (-np.inf, np.inf),
    "group_loss_increase": (-np.inf, np.inf),
    "disparate_loss_increase": (0.0, np.inf),
    "perplexity_gap_change": (-np.inf, np.inf),
    "agreement": (0.0, 1.0),
    "group_agreement": (0.0, 1.0),
}
_LM_PER_GROUP = ("group_mean_loss", "group_loss_increase", "group_agreement")
_LM_ACROSS_GROUPS = ("loss_gap", "worst_group_loss", "perplexity_gap", "disparate_loss_increase", "perplexity_gap_change")
#: Bootstrap index draws per chunk (bounds the memory of a replicate batch: 4 M int64 = 32 MB).
_DRAWS_PER_CHUNK = 4_000_000


def _check_language_model(
    groups: Any,
    losses: Any,
    *,
    groups_2: Any = None,
    reference_losses: Any = None,
    loss_weights: Any = None,
    agreement: Any = None,
    n_boot: Any = 0,
    confidence_level: Any = 0.95,
    seed: Any = 0,
    min_group_size: Any = DEFAULT_MIN_GROUP_SIZE,
) -> dict[str, Optional[np.ndarray]]:
    """Validate every input of the language-model mode; return clean numpy arrays."""
    _check_options(n_boot, confidence_level, seed, "holm", min_group_size)
    if groups is None:
        raise ValueError("`groups` is missing (got None): the language-model mode needs the group of every example.")
    raw = {"groups": groups, "losses": losses, "groups_2": groups_2, "reference_losses": reference_losses,
           "loss_weights": loss_weights, "agreement": agreement}
    arrays = {k: _to_array(k, v) for k, v in raw.items() if v is not None}
    _check_lengths({k: len(v) for k, v in arrays.items()})
    out: dict[str, Optional[np.ndarray]] = dict.fromkeys(raw)
    for name, arr in arrays.items():
        out[name] = _check_agreement(name, arr) if name == "agreement" else _CHECKERS[name](name, arr)
    return out


def _check_agreement(name: str, arr: np.ndarray) -> np.ndarray:
    """Per-example shares of agreeing predictions: finite numbers in [0, 1]."""
    arr = _check_floats(name, arr)
    _first_bad(name, arr, (arr < 0) | (arr > 1), "a value outside [0, 1]", "shares in [0, 1]")
    return arr


def _weighted_group_sums(codes: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(codes, weights=values, minlength=n_groups)


def language_model_disparity(
    groups: np.ndarray,
    losses: np.ndarray,
    groups_2: Optional[np.ndarray] = None,
    reference_losses: Optional[np.ndarray] = None,
    loss_weights: Optional[np.ndarray] = None,
    agreement: Optional[np.ndarray] = None,
    n_boot: int = 0,
    confidence_level: float = 0.95,
    seed: Optional[int] = 0,
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
) -> dict[str, Any]:
    """The language-model statistics on validated arrays (see `_check_language_model`).

    Every mean is weighted by ``loss_weights`` (1 per example when absent): with per-example mean
    NLLs and their scored-token counts, a group's mean loss is its summed token NLL over its
    tokens. Perplexity is ``exp`` of a mean loss. The worst group is the one with the highest
    mean loss (on a tie, the first in group order)."""
    codes, names = _encode_groups(groups, groups_2)
    n_groups = len(names)
    weights = np.ones_like(losses) if loss_weights is None else loss_weights
    count = np.bincount(codes, minlength=n_groups).astype(np.float64)
    tokens = _weighted_group_sums(codes, weights, n_groups)

    def means(values: np.ndarray) -> tuple[float, np.ndarray]:
        return float((values * weights).sum() / weights.sum()), _weighted_group_sums(codes, values * weights, n_groups) / tokens

    mean_loss, loss_g = means(losses)
    ppl_g = np.exp(loss_g)
    worst = int(np.argmax(loss_g))
    out: dict[str, Any] = {
        "mean_loss": mean_loss,
        "perplexity": float(np.exp(mean_loss)),
        "group_mean_loss": _by_group(names, loss_g),
        "group_perplexity": _by_group(names, ppl_g),
        "group_count": _by_group(names, count, int),
        "group_tokens": _by_group(names, tokens),
        "worst_group": names[worst],
        "worst_group_loss": float(loss_g[worst]),
        "worst_group_perplexity": float(ppl_g[worst]),
        "loss_gap": float(loss_g.max() - loss_g.min()),
        "perplexity_gap": float(ppl_g.max() - ppl_g.min()),
        "perplexity_ratio": float(ppl_g.max() / ppl_g.min()),
    }
    estimates: dict[str, Any] = {
        "mean_loss": mean_loss, "group_mean_loss": loss_g, "loss_gap": out["loss_gap"],
        "worst_group_loss": out["worst_group_loss"], "perplexity_gap": out["perplexity_gap"],
    }
    if reference_losses is not None:
        ref_mean, ref_g = means(reference_losses)
        increase_g = loss_g - ref_g
        ref_ppl_g = np.exp(ref_g)
        out.update({
            "reference_mean_loss": ref_mean,
            "reference_perplexity": float(np.exp(ref_mean)),
            "group_reference_mean_loss": _by_group(names, ref_g),
            "group_reference_perplexity": _by_group(names, ref_ppl_g),
            "loss_increase": mean_loss - ref_mean,
            "group_loss_increase": _by_group(names, increase_g),
            "disparate_loss_increase": float(increase_g.max() - increase_g.min()),
            "most_increased_group": names[int(np.argmax(increase_g))],
            "reference_perplexity_gap": float(ref_ppl_g.max() - ref_ppl_g.min()),
            "perplexity_gap_change": out["perplexity_gap"] - float(ref_ppl_g.max() - ref_ppl_g.min()),
        })
        estimates.update(
            loss_increase=out["loss_increase"], group_loss_increase=increase_g,
            disparate_loss_increase=out["disparate_loss_increase"], perplexity_gap_change=out["perplexity_gap_change"],
        )
    if agreement is not None:
        agree, agree_g = means(agreement)
        out.update({
            "agreement": agree,
            "group_agreement": _by_group(names, agree_g),
            "flip_rate": 1.0 - agree,
            "group_flip_rate": _by_group(names, 1.0 - agree_g),
        })
        estimates.update(agreement=agree, group_agreement=agree_g)

    if n_boot > 0:
        samples = _lm_replicates(codes, n_groups, weights, losses, reference_losses, agreement, n_boot, seed)
        too_small = count < min_group_size
        for key, replicates in samples.items():
            lo, hi = _hull_interval(replicates, estimates[key], confidence_level, _LM_BOUNDS[key])
            if key in _LM_PER_GROUP:
                out[f"{key}_ci"] = {
                    name: None if small else [float(a), float(b)]
                    for name, small, a, b in zip(names, too_small, lo, hi, strict=True)
                }
            elif (key in _LM_ACROSS_GROUPS and too_small.any()) or count.sum() < min_group_size:
                out[f"{key}_ci"] = None
            else:
                out[f"{key}_ci"] = [float(lo), float(hi)]
        # a perplexity interval is exp of its mean-loss interval (exp is monotone)
        out["perplexity_ci"] = None if out["mean_loss_ci"] is None else [math.exp(v) for v in out["mean_loss_ci"]]
        out["group_perplexity_ci"] = {
            g: None if ci is None else [math.exp(v) for v in ci] for g, ci in out["group_mean_loss_ci"].items()
        }
        out["worst_group_perplexity_ci"] = (
            None if out["worst_group_loss_ci"] is None else [math.exp(v) for v in out["worst_group_loss_ci"]]
        )
        out["n_boot"] = int(n_boot)
        out["confidence_level"] = float(confidence_level)
        out["min_group_size"] = int(min_group_size)
        out["groups_too_small_for_interval"] = [name for name, small in zip(names, too_small, strict=True) if small]
    return out


def _lm_replicates(
    codes: np.ndarray,
    n_groups: int,
    weights: np.ndarray,
    losses: np.ndarray,
    reference_losses: Optional[np.ndarray],
    agreement: Optional[np.ndarray],
    n_boot: int,
    seed: Optional[int],
) -> dict[str, np.ndarray]:
    """Group-stratified, paired bootstrap replicates of the language-model statistics.

    Within each group, ``n_g`` example indices are drawn with replacement per replicate
    (``numpy.random.default_rng(seed)``, groups in order, in chunks of replicates that bound the
    memory); a drawn example brings its weight (tokens), both models' losses and its agreement,
    so every statistic is the ratio estimator of its resample and the increases are paired."""
    rng = np.random.default_rng(seed)
    columns = {"weight": weights, "loss": losses * weights}
    if reference_losses is not None:
        columns["reference"] = reference_losses * weights
    if agreement is not None:
        columns["agreement"] = agreement * weights
    sums = {k: np.zeros((n_boot, n_groups)) for k in columns}
    for g in range(n_groups):
        rows = np.flatnonzero(codes == g)
        n_g = rows.size
        chunk = max(1, _DRAWS_PER_CHUNK // n_g)
        group_columns = {k: v[rows] for k, v in columns.items()}
        for start in range(0, n_boot, chunk):
            stop = min(n_boot, start + chunk)
            draws = rng.integers(0, n_g, size=(stop - start, n_g))
            for key, values in group_columns.items():
                sums[key][start:stop, g] = values[draws].sum(axis=1)
    total = sums["weight"].sum(axis=1)
    loss = sums["loss"] / sums["weight"]  # (B, G)
    ppl = np.exp(loss)
    samples = {
        "mean_loss": sums["loss"].sum(axis=1) / total,
        "group_mean_loss": loss,
        "loss_gap": loss.max(axis=1) - loss.min(axis=1),
        "worst_group_loss": loss.max(axis=1),
        "perplexity_gap": ppl.max(axis=1) - ppl.min(axis=1),
    }
    if reference_losses is not None:
        reference = sums["reference"] / sums["weight"]
        increase = loss - reference
        ref_ppl = np.exp(reference)
        samples["loss_increase"] = (sums["loss"].sum(axis=1) - sums["reference"].sum(axis=1)) / total
        samples["group_loss_increase"] = increase
        samples["disparate_loss_increase"] = increase.max(axis=1) - increase.min(axis=1)
        samples["perplexity_gap_change"] = samples["perplexity_gap"] - (ref_ppl.max(axis=1) - ref_ppl.min(axis=1))
    if agreement is not None:
        samples["agreement"] = sums["agreement"].sum(axis=1) / total
        samples["group_agreement"] = sums["agreement"] / sums["weight"]
    return samples


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
        if predictions is None and references is None and kwargs.get("losses") is not None and not self._n_added_so_far():
            return self._compute_language_model(kwargs)
        if kwargs.get("agreement") is not None:
            raise ValueError(
                "`agreement` belongs to the language-model mode: call compute() without predictions and references "
                "(groups, losses, loss_weights, reference_losses, agreement)."
            )
        kwargs.pop("agreement", None)
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

    def _compute_language_model(self, kwargs: dict) -> dict[str, Any]:
        """The language-model mode (see the class docstring): validated, computed, nothing stored
        (evaluate's storage holds predictions and references, which this mode has none of)."""
        allowed = {*_LM_KWARGS, *(k for k in _OPTION_KWARGS if k != "p_adjust")}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            hint = (" (p_adjust adjusts the McNemar tests of predictions)" if unknown == ["p_adjust"]
                    else " (reference_predictions need predictions and references)" if "reference_predictions" in unknown
                    else "")
            raise ValueError(
                f"Unknown input(s) {unknown} for the language-model mode{hint}; it accepts "
                f"{', '.join(sorted(allowed))}."
            )
        arrays = _check_language_model(**kwargs)
        options = {k: kwargs[k] for k in ("n_boot", "confidence_level", "seed", "min_group_size") if k in kwargs}
        options["n_boot"] = int(options.get("n_boot", 0))
        if "confidence_level" in options:
            options["confidence_level"] = float(options["confidence_level"])
        return language_model_disparity(**arrays, **options)

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
        loss_weights=None,
        n_boot: int = 0,
        confidence_level: float = 0.95,
        seed: Optional[int] = 0,
        p_adjust: str = "holm",
        min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
    ) -> dict[str, Any]:
        arrays = _check_all(
            predictions,
            references,
            groups,
            groups_2=groups_2,
            reference_predictions=reference_predictions,
            losses=losses,
            reference_losses=reference_losses,
            loss_weights=loss_weights,
            n_boot=n_boot,
            confidence_level=confidence_level,
            seed=seed,
            p_adjust=p_adjust,
            min_group_size=min_group_size,
        )
        return group_disparity(
            **arrays, n_boot=int(n_boot), confidence_level=float(confidence_level), seed=seed, p_adjust=p_adjust,
            min_group_size=int(min_group_size),
        )
