"""What every task implements: how a model of that task turns a batch into per-example outputs.

A :class:`Task` says which transformers classes and ``pipeline`` tag it uses, how a batch's
targets come from the data, the per-example loss (differentiable: the trainer, curvature and
allocation use it), the per-example outputs of a pass (:class:`TaskOutputs`: loss, scored units,
each unit's prediction and whether it is right), how those become the ``group_disparity``
metric's numbers, and the per-example logit statistics explain reports. Everything above this
floor gets these from the task and never computes a prediction or a loss itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..errors import FairQuantError

#: Modalities a model's inputs can have (what a classification model's transformers class depends on).
MODALITIES = ("text", "image")


def score_statistics(
    scores: torch.Tensor, labels: torch.Tensor, variance: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Per row of class (or option) ``scores``: cross-entropy against ``labels``, correctness, the
    population variance of the scores (``variance`` when the caller computes it, e.g. over the
    options present only), the confidence (max softmax probability) and the margin (the label's
    score minus the best other; negative when wrong)."""
    true = scores.gather(1, labels[:, None]).squeeze(1)
    others = scores.scatter(1, labels[:, None], float("-inf"))
    return {
        "loss": torch.nn.functional.cross_entropy(scores, labels, reduction="none"),
        "correct": (scores.argmax(-1) == labels).to(scores.dtype),
        "logit_variance": scores.var(dim=-1, unbiased=False) if variance is None else variance,
        "confidence": scores.softmax(-1).amax(-1),
        "margin": true - others.amax(-1),
    }


def float_logits(output: Any) -> torch.Tensor:
    """``output.logits`` (or the tensor itself) as a float tensor. A tensor subclass that stores
    quantized values (a quantization library's quantized activations) is dequantized
    (differentiably) — asked through ``dequantize``, so no library is named here."""
    logits = getattr(output, "logits", output)
    if not torch.is_tensor(logits):
        raise FairQuantError(
            f"the model returned {type(output).__name__} without a `logits` tensor: a transformers model output "
            "(or a tensor of logits) is needed"
        )
    if type(logits) not in (torch.Tensor, torch.nn.Parameter) and hasattr(logits, "dequantize"):
        logits = logits.dequantize()
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


@dataclass(frozen=True)
class MetricNames:
    """What a task's results are called in the ``group_disparity`` output and in tables and cards:
    the headline metric overall, per group, its gap, the worst group, the per-group change under
    quantization and the share of changed predictions."""

    overall: str = "accuracy"
    group: str = "group_accuracy"
    gap: str = "accuracy_gap"
    worst_group: str = "worst_group"
    worst_value: str = "worst_group_accuracy"
    drop: str = "group_accuracy_drop"
    disparate: str = "disparate_drop"
    gap_change: str = "gap_change"
    flip: str = "flip_rate"
    #: how tables name the headline metric, and its unit ("%": a fraction shown ×100)
    label: str = "accuracy"
    unit: str = "%"
    #: True when a larger value is better (accuracy), False when smaller is (a loss, perplexity)
    higher_is_better: bool = True
    #: model-index ``metric.type`` of the headline metric
    model_index_type: str = "accuracy"


@dataclass
class TaskOutputs:
    """One model's per-example outputs over a dataset, in row order.

    ``losses[i]`` is example i's mean loss over its ``units[i]`` scored units (1 for a classified
    example, its target tokens for a language model); ``predictions``/``correct`` hold every
    scored unit's prediction and whether it equals its target, example after example
    (``units.sum()`` entries). ``extras`` holds per-example arrays (first axis: examples) a task
    keeps for its own metrics, e.g. every option's score of a multiple-choice item.
    """

    losses: np.ndarray
    units: np.ndarray
    predictions: np.ndarray
    correct: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.losses)

    @classmethod
    def concatenate(cls, parts: Iterable["TaskOutputs"]) -> "TaskOutputs":
        parts = list(parts)
        if not parts:
            raise FairQuantError("no outputs to concatenate: the dataset yielded no batch")
        extras = {k: np.concatenate([p.extras[k] for p in parts]) for k in parts[0].extras}
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("losses", "units", "predictions", "correct")),
                   extras=extras)

    def example_predictions(self) -> np.ndarray:
        """One prediction per example (every example has exactly one scored unit)."""
        if not (self.units == 1).all():
            raise FairQuantError("these outputs score several units per example: there is no single prediction per example")
        return self.predictions

    def agreement(self, other: "TaskOutputs") -> np.ndarray:
        """Per example, the share of its scored units whose prediction ``other`` shares (1 − flips)."""
        if not np.array_equal(self.units, other.units):
            raise FairQuantError("outputs of different data (scored units differ per example) cannot be compared")
        same = (self.predictions == other.predictions).astype(np.float64)
        starts = np.concatenate([[0], np.cumsum(self.units)[:-1]])
        counts = np.add.reduceat(same, starts) if len(same) else np.zeros(len(self.units))
        return np.where(self.units > 0, counts / np.maximum(self.units, 1), 1.0)


class Task:
    """The interface of a task (subclass it in one module of :mod:`hf_fairquant.tasks`, then
    :func:`~hf_fairquant.tasks.register_task` an instance)."""

    #: the name recipes, the CLI and results use (``model.task: classification``)
    name: ClassVar[str] = ""
    #: the metric names its results carry
    metric_names: ClassVar[MetricNames] = MetricNames()
    #: a data column whose per-token values are collated with each batch (padded with -100) and
    #: handed to :meth:`targets` as the batch's references (None: references come per row)
    batch_label_column: ClassVar[str | None] = None
    #: what one scored unit is (``"example"``, ``"token"``): explain compares groups at equal counts of them
    unit_name: ClassVar[str] = "example"
    #: whether the data carries a class label column (False: the targets come from the inputs)
    uses_class_labels: ClassVar[bool] = True
    #: whether a checkpoint's head alone selects this task (:func:`~.registry.task_for_architecture`);
    #: False for a task that shares its models' head with another (multiple choice scores with a
    #: causal LM) and is therefore named explicitly (``task=``, ``model.task``, ``--task``)
    selected_by_head: ClassVar[bool] = True
    #: True when the task encodes a dataset's raw columns itself (:meth:`prepare_dataset`), so a
    #: run skips the generic text/image preprocessing
    encodes_raw_rows: ClassVar[bool] = False
    #: whether ``FairQuantTrainer`` and a recipe's ``training``/``mitigation`` can train a model of
    #: this task (False: it is audited and explained as it is)
    trainable: ClassVar[bool] = True

    def training_collator(self, inner: Any = None) -> Any:
        """The ``Trainer`` data collator of this task around ``inner`` (the user's or the default
        one): what adds the labels a training batch needs; ``inner`` itself by default. Evaluation
        batches go through :meth:`evaluation_collator` instead."""
        return inner

    # ------------------------------------------------------------ which models
    def handles(self, architecture: str) -> bool:
        """True if a checkpoint of this transformers class (``config.architectures[0]``) is a model of this task."""
        raise NotImplementedError

    def auto_class(self, modality: str) -> str:
        """The ``transformers.AutoModelFor…`` class that builds a model of this task."""
        raise NotImplementedError

    def pipeline_tag(self, modality: str) -> str:
        """The Hub ``pipeline_tag`` (and ``transformers.pipeline`` task) of a model of this task."""
        raise NotImplementedError

    def config_kwargs(self, class_names: Sequence[str]) -> dict[str, Any]:
        """What a model built from a config needs from the data (e.g. a classifier's labels)."""
        return {}

    def check_model(self, model: torch.nn.Module) -> None:
        """Raise a FairQuantError if ``model``'s head does not fit this task (naming both), before any work."""
        self.check_architecture(type(model).__name__, modality_of(model))

    def check_architecture(self, architecture: str, modality: str = "text") -> None:
        """A transformers class whose head is of another kind (see :func:`head_kind`) is refused,
        naming both; a class transformers does not list (a custom model) is taken as it is."""
        kind = head_kind(architecture)
        if kind is not None and not self.handles(architecture):
            raise FairQuantError(
                f"{architecture} is a {kind or 'base (headless)'} model: its head does not fit the task {self.name!r}; "
                f"a {self.name} model is built with {self.auto_class(modality)} (or choose the task that fits the checkpoint)"
            )

    # ------------------------------------------------------------ data
    def prepare_dataset(self, dataset: Any, processing_class: Any = None) -> Any:
        """``dataset`` as this task's model inputs. A task whose rows need their own encoding
        (multiple choice: a context and its options) encodes raw rows here with the tokenizer in
        ``processing_class``; the others return ``dataset`` as it is."""
        return dataset

    def evaluation_collator(self, model: torch.nn.Module, processing_class: Any = None) -> Any:
        """The collator of this task's evaluation batches (audit, explain, calibration), or None
        for the default (dynamic padding for a tokenizer, else stacking); a collator the caller
        passes wins. Training batches go through :meth:`training_collator` instead."""
        return None

    def references(self, dataset: Any, model: torch.nn.Module, where: str) -> np.ndarray | None:
        """Every row's validated reference (a class id), or None when targets come with each batch."""
        raise NotImplementedError

    def targets(self, inputs: Mapping[str, torch.Tensor], references: torch.Tensor | None) -> torch.Tensor:
        """A batch's targets from its model inputs and its rows' references."""
        if references is None:
            raise FairQuantError(f"task {self.name!r} needs references for every row")
        return references

    def has_batch_labels(self, dataset: Any) -> bool:
        """Whether ``dataset`` holds this task's per-token :attr:`batch_label_column`."""
        return False

    def units(self, targets: torch.Tensor) -> torch.Tensor:
        """Scored units per example of a batch's targets (one each unless a task scores several)."""
        return torch.ones(targets.shape[0], dtype=torch.long, device=targets.device)

    def limit_units(self, targets: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``targets`` scoring at most ``keep[i]`` units of example i (the first ones); one-unit
        examples are kept whole."""
        return targets

    # ------------------------------------------------------------ per example
    def loss(self, output: Any, targets: torch.Tensor) -> torch.Tensor:
        """Per-example loss (shape ``(batch,)``), differentiable: the mean over the example's scored units."""
        raise NotImplementedError

    def batch_outputs(self, output: Any, targets: torch.Tensor) -> TaskOutputs:
        """A batch's :class:`TaskOutputs` (no gradient)."""
        raise NotImplementedError

    def needs_forward_check(self, model: torch.nn.Module) -> bool:
        """Whether the references can only be checked against a forward's output (no config says enough)."""
        return False

    def check_forward(self, output: Any, references: np.ndarray | None, model: torch.nn.Module) -> None:
        """One example's forward output: it must give this task a loss for every reference."""

    def eval_outputs(self, predictions: np.ndarray, label_ids: np.ndarray) -> TaskOutputs:
        """:class:`TaskOutputs` from a ``Trainer``'s ``EvalPrediction`` arrays (numpy logits, label ids)."""
        raise NotImplementedError

    def preprocess_logits_for_metrics(self) -> Any:
        """A ``Trainer(preprocess_logits_for_metrics=...)`` that reduces each batch's logits to
        what :meth:`eval_outputs` reads, or None when the logits are small enough to keep."""
        return None

    def logit_statistics(self, output: Any, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example statistics of the logits (explain's link 2), keys as :data:`LOGIT_STATISTICS`."""
        raise NotImplementedError

    def snippet_predictions(self, logits: str = "logits") -> str:
        """A line of numpy code that turns the array ``logits`` into predictions (for card snippets)."""
        raise NotImplementedError

    # ------------------------------------------------------------ the metric
    def compute_metrics(
        self,
        metric: Any,
        outputs: TaskOutputs,
        references: np.ndarray | None,
        groups: Sequence[Any],
        reference: TaskOutputs | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """The ``group_disparity`` metric of ``outputs`` (against a ``reference`` model's outputs on
        the same rows, e.g. the full-precision one); ``options``: n_boot, confidence_level, seed."""
        raise NotImplementedError

    def markdown_sections(self, report: Any) -> list[tuple[str, str]]:
        """(title, Markdown) sections of this task's results beyond the accuracy table, for
        ``report.md`` (e.g. multiple choice's stereotype-preference rates); none by default."""
        return []


#: Per-example logit statistics every task reports for explain, in report order.
LOGIT_STATISTICS = ("loss", "correct", "logit_variance", "confidence", "margin")


def head_kind(architecture: str) -> str | None:
    """The kind of head transformers lists ``architecture`` under (``"causal-lm"``,
    ``"sequence-classification"``, ``""`` for a headless base model), or None for a class no auto
    mapping lists (a custom model)."""
    from transformers.models.auto import modeling_auto

    for name in sorted(vars(modeling_auto)):
        if not (name.startswith("MODEL") and name.endswith("_MAPPING_NAMES")):
            continue
        for value in getattr(modeling_auto, name).values():
            if architecture == value or (isinstance(value, (tuple, list)) and architecture in value):
                return name[len("MODEL_FOR_"):-len("_MAPPING_NAMES")].lower().replace("_", "-") if name != "MODEL_MAPPING_NAMES" else ""
    return None


def modality_of(model: torch.nn.Module) -> str:
    """``"image"`` for a model whose main input is ``pixel_values``, else ``"text"``."""
    return "image" if getattr(model, "main_input_name", "input_ids") == "pixel_values" else "text"


def is_quantized_tensor(value: Any) -> bool:
    """A tensor subclass carrying quantized values (dequantized by :func:`float_logits`)."""
    return torch.is_tensor(value) and type(value) not in (torch.Tensor, torch.nn.Parameter) and hasattr(value, "dequantize")


__all__ = [
    "LOGIT_STATISTICS", "MODALITIES", "MetricNames", "Task", "TaskOutputs", "float_logits", "head_kind",
    "is_quantized_tensor", "modality_of",
]
