"""``compute_metrics`` for ``transformers.Trainer`` that reports per-group results.

The math lives in the ``group_disparity`` evaluate module; this file only unpacks an
``EvalPrediction``, calls the module and flattens its output into the float-valued keys that
Trainer logs, callbacks and ``metric_for_best_model`` expect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from ..errors import FairQuantError
from ..tasks import get_task
from ._loading import load_group_disparity

if TYPE_CHECKING:
    from transformers import EvalPrediction

GroupNames = Union[Mapping[int, str], Sequence[str]]

#: Keys of the module's output that echo settings rather than measure anything.
_SETTINGS = frozenset({"n_boot", "confidence_level", "min_group_size", "p_adjust"})


def _names_by_code(group_names: Optional[GroupNames]) -> Optional[dict[str, str]]:
    """Map ``str(code)`` (the module's group names) to readable names; check they are unique."""
    if group_names is None:
        return None
    if isinstance(group_names, str):
        raise FairQuantError(f"group_names must be a mapping or a sequence of names, got the string {group_names!r}.")
    items = group_names.items() if isinstance(group_names, Mapping) else enumerate(group_names)
    mapping: dict[str, str] = {}
    for code, name in items:
        if isinstance(code, bool) or not isinstance(code, (int, np.integer)):
            raise FairQuantError(f"group_names keys must be integer group codes, got {code!r}.")
        mapping[str(int(code))] = str(name)
    seen: dict[str, str] = {}
    for code, name in mapping.items():
        if name in seen:
            raise FairQuantError(
                f"group_names gives the name {name!r} to groups {seen[name]} and {code}; names must be unique."
            )
        seen[name] = code
    return mapping


def _unpack(
    eval_pred: "EvalPrediction", dataset_groups: Optional[np.ndarray] = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits or class ids, labels, groups) from an EvalPrediction with ``label_ids=(labels, groups)``,
    or with ``label_ids=labels`` and the groups of the eval dataset (``dataset_groups``, row order)."""
    label_ids = eval_pred.label_ids
    if dataset_groups is not None and not isinstance(label_ids, (tuple, list)):
        labels = np.asarray(label_ids)
        if len(labels) != len(dataset_groups):
            raise FairQuantError(
                f"the Trainer evaluated {len(labels)} examples but group_compute_metrics(eval_dataset=...) was given "
                f"{len(dataset_groups)}: pass the dataset this Trainer evaluates (a new eval set needs its own "
                "group_compute_metrics)"
            )
        predictions = eval_pred.predictions
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]
        return np.asarray(predictions), labels, dataset_groups
    if not isinstance(label_ids, (tuple, list)) or len(label_ids) != 2:
        got = f"a tuple of {len(label_ids)}" if isinstance(label_ids, (tuple, list)) else type(label_ids).__name__
        raise FairQuantError(
            f"EvalPrediction.label_ids must be (labels, groups), got {got}: the Trainer passed no group column. "
            "Pass group_compute_metrics(group_spec=GroupSpec('group'), eval_dataset=eval_ds) (groups read "
            "from the dataset, strings fine), or set label_names=['labels', 'group'] in TrainingArguments "
            "with integer group codes (GroupSpec.encode)."
        )
    predictions = eval_pred.predictions
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    labels, groups = (np.asarray(a) for a in label_ids)
    if groups.ndim == 2 and groups.shape[1] == 1:
        groups = groups[:, 0]
    return np.asarray(predictions), labels, groups


def _is_interval(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )


def _flatten(result: Mapping[str, Any], names: Optional[dict[str, str]]) -> dict[str, float]:
    """Flat float keys: ``group_accuracy/<name>``, ``accuracy_gap_ci_lo``, ``group_accuracy_ci_hi/<name>``.

    Left out: names (``worst_group``, ``groups_too_small_for_interval``), echoed settings, and
    values the module leaves undefined (None: no interval for a small group, no detectable drop)."""
    rename = (lambda g: names.get(g, g)) if names else (lambda g: g)
    flat: dict[str, float] = {}
    for key, value in result.items():
        if key in _SETTINGS or value is None or isinstance(value, str):
            continue
        if isinstance(value, Mapping):
            for group, v in value.items():
                if _is_interval(v):
                    flat[f"{key}_lo/{rename(group)}"], flat[f"{key}_hi/{rename(group)}"] = float(v[0]), float(v[1])
                elif v is not None:
                    flat[f"{key}/{rename(group)}"] = float(v)
        elif _is_interval(value):
            flat[f"{key}_lo"], flat[f"{key}_hi"] = float(value[0]), float(value[1])
        elif not isinstance(value, (list, tuple)):
            flat[key] = float(value)
    return flat


def group_compute_metrics(
    group_names: Optional[GroupNames] = None,
    n_boot: int = 0,
    confidence_level: float = 0.95,
    seed: int = 0,
    reference_predictions: Optional[Sequence[int]] = None,
    include_loss: bool = True,
    group_spec: Any = None,
    eval_dataset: Any = None,
    task: Any = "classification",
    min_group_size: Optional[int] = None,
    p_adjust: str = "holm",
) -> Callable[["EvalPrediction"], dict[str, float]]:
    """Build a ``compute_metrics`` for ``Trainer`` that reports accuracy per group.

    The Trainer must pass the group column along with the labels (``label_names=["labels",
    "group"]``), so ``EvalPrediction.label_ids`` is ``(labels, groups)`` with integer group codes.
    Predictions are logits (a tuple's first element is used) or class ids; the ``task`` (default
    classification: argmax and cross-entropy) turns them into per-example predictions and losses.

    Args:
        group_names: readable names for the integer group codes, as a mapping or a sequence
            indexed by code (e.g. a ``ClassLabel``'s ``names``); default ``str(code)``.
        n_boot, confidence_level, seed: bootstrap settings of the ``group_disparity`` module.
        min_group_size: groups with fewer eval examples get no interval (default: the module's, 30).
        p_adjust: correction of the per-group McNemar p-values (with ``reference_predictions``):
            ``"holm"``, ``"bh"`` or ``"none"``.
        reference_predictions: class ids of a reference (full-precision) model on the same eval
            set in the same order; adds accuracy drops and flip rates.
        include_loss: with logits, add per-group mean cross-entropy (``group_mean_loss/<name>``).
        group_spec: a :class:`~hf_fairquant.GroupSpec` (or a column name): the groups' names come
            from it (fitted on ``eval_dataset`` when it is not fitted), so string groups need no
            hand-made codes; replaces ``group_names``.
        eval_dataset: the dataset the Trainer evaluates; its group column(s) are encoded now (a
            missing column is an error here, not an empty metrics dict later) and matched to the
            predictions by row order, so ``label_names`` can stay ``["labels"]``. Without it the
            Trainer must pass integer codes as the second label (``label_names=["labels", "group"]``).
        task: a task name or :class:`~hf_fairquant.tasks.Task` (what a prediction and a loss are).

    Returns:
        A callable ``EvalPrediction -> dict[str, float]`` with the module's keys flattened:
        scalars as they are (``accuracy``, ``worst_group_accuracy``, ``accuracy_gap``, ...),
        per-group values as ``<key>/<name>`` (``group_accuracy/<name>``, ``group_count/<name>``),
        intervals as ``<key>_lo``/``<key>_hi`` (per group: ``<key>_lo/<name>``). The name-valued
        ``worst_group`` and the echoed settings are left out. Any key works as
        ``metric_for_best_model`` (e.g. ``"worst_group_accuracy"``).
    """
    dataset_groups = None
    if group_spec is not None:
        from ..groups import GroupSpec

        if group_names is not None:
            raise FairQuantError("pass group_spec or group_names, not both (the spec names the groups)")
        spec = group_spec if isinstance(group_spec, GroupSpec) else GroupSpec(group_spec)
        if not spec.is_fitted:
            if eval_dataset is None:
                raise FairQuantError("group_spec is not fitted: pass eval_dataset=... or a fitted GroupSpec")
            spec = spec.fit(eval_dataset)
        group_names = spec.names
        if eval_dataset is not None:
            dataset_groups = spec.encode(eval_dataset)  # a missing group column fails here, naming it
    elif eval_dataset is not None:
        raise FairQuantError("eval_dataset needs group_spec=... (which column(s) hold the groups)")
    names = _names_by_code(group_names)
    task = get_task(task)
    module = load_group_disparity()
    options: dict[str, Any] = {"n_boot": n_boot, "confidence_level": confidence_level, "seed": seed,
                               "p_adjust": p_adjust}
    if min_group_size is not None:
        options["min_group_size"] = min_group_size
    # Dry run on one example: invalid settings fail now, not after the first epoch of training.
    module.compute(predictions=[0], references=[0], groups=[0], **options)
    ref = None if reference_predictions is None else np.asarray(reference_predictions)

    def compute_metrics(eval_pred: "EvalPrediction") -> dict[str, float]:
        predictions, labels, groups = _unpack(eval_pred, dataset_groups)
        extra: dict[str, Any] = {}
        if not task.uses_class_labels:  # e.g. a causal LM: per-example losses and tokens (its metric mode)
            result = task.compute_metrics(module, task.eval_outputs(predictions, labels), None, groups, **options)
            _check_names(result, names)
            return _flatten(result, names)
        if predictions.ndim == 2:
            outputs = task.eval_outputs(predictions, labels)
            if include_loss and len(labels) == len(predictions) > 0:  # else the module names the problem
                extra["losses"] = outputs.losses
            predictions = outputs.example_predictions()
        if ref is not None:
            extra["reference_predictions"] = ref
        result = module.compute(
            predictions=predictions,
            references=labels,
            groups=groups,
            **options,
            **extra,
        )
        _check_names(result, names)
        return _flatten(result, names)

    return compute_metrics


def _check_names(result: Mapping[str, Any], names: Optional[dict[str, str]]) -> None:
    if names is not None:
        unknown = sorted(set(result["group_count"]) - set(names))
        if unknown:
            raise FairQuantError(f"group codes {unknown} have no entry in group_names (known codes: {sorted(names)}).")
