"""Single-label classification (text or image): a class per example, cross-entropy loss.

Per example: the predicted class (argmax of the logits), the cross-entropy against the label,
one scored unit. Labels come from the dataset's ``labels``/``label`` column (ints, integral
floats, bools or class names through the model's ``config.label2id``) and must lie within the
model's classes — for a model without a config, within its logits, checked on one forward.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FairQuantError
from ..groups import check_labels
from .base import MetricNames, Task, TaskOutputs, float_logits, score_statistics
from .registry import register_task

_AUTO_CLASSES = {"text": "AutoModelForSequenceClassification", "image": "AutoModelForImageClassification"}
_PIPELINE_TAGS = {"text": "text-classification", "image": "image-classification"}
_HEADS = ("ForSequenceClassification", "ForImageClassification")


class ClassificationTask(Task):
    name = "classification"
    metric_names = MetricNames()

    def handles(self, architecture: str) -> bool:
        return any(head in architecture for head in _HEADS)

    def auto_class(self, modality: str) -> str:
        return _AUTO_CLASSES[modality]

    def pipeline_tag(self, modality: str) -> str:
        return _PIPELINE_TAGS[modality]

    def config_kwargs(self, class_names: Sequence[str]) -> dict[str, Any]:
        id2label = dict(enumerate(class_names))
        return {"num_labels": len(class_names), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}

    def check_model(self, model: torch.nn.Module) -> None:
        super().check_model(model)
        config = getattr(model, "config", None)
        problem = getattr(config, "problem_type", None)
        if problem in ("regression", "multi_label_classification"):
            raise FairQuantError(
                f"{type(model).__name__} has problem_type={problem!r}: the classification task needs a single-label "
                "classifier (per-example cross-entropy of the logits against integer labels)"
            )
        num_labels = getattr(config, "num_labels", None)
        if isinstance(num_labels, int) and num_labels < 2:
            raise FairQuantError(
                f"{type(model).__name__} has config.num_labels={num_labels}: a classifier needs at least 2 classes "
                "(one logit has no cross-entropy and every prediction would count as right)"
            )

    def needs_forward_check(self, model: torch.nn.Module) -> bool:
        return getattr(getattr(model, "config", None), "num_labels", None) is None

    # ------------------------------------------------------------ data
    def references(self, dataset: Any, model: torch.nn.Module, where: str) -> np.ndarray:
        config = getattr(model, "config", None)
        return check_labels(dataset, where, getattr(config, "num_labels", None), getattr(config, "label2id", None),
                            id2label=getattr(config, "id2label", None))

    def check_forward(self, output: Any, references: np.ndarray | None, model: torch.nn.Module) -> None:
        """The output has (batch, classes) logits with at least 2 classes, and every label has a
        logit (what a model without ``config.num_labels`` is checked by)."""
        if not torch.is_tensor(output) and getattr(output, "logits", None) is None:
            raise FairQuantError(
                f"{type(model).__name__} returns {type(output).__name__} without `logits`: the classification task "
                "needs a classifier whose output has .logits of shape (batch, classes)"
            )
        logits = float_logits(output)
        if logits.ndim != 2 or logits.shape[1] < 2:
            raise FairQuantError(
                f"{type(model).__name__} gives logits of shape {tuple(logits.shape)}; the classification task needs "
                "(batch, classes) with at least 2 classes (one logit has no cross-entropy and is always 'right')"
            )
        if references is not None:
            bad = sorted(set(references[(references < 0) | (references >= logits.shape[1])].tolist()))
            if bad:
                raise FairQuantError(
                    f"labels {bad[:10]} have no loss: the model gives {logits.shape[1]} logits (classes "
                    f"0..{logits.shape[1] - 1})"
                )

    # ------------------------------------------------------------ per example
    def loss(self, output: Any, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(float_logits(output), targets, reduction="none")

    @torch.no_grad()
    def batch_outputs(self, output: Any, targets: torch.Tensor) -> TaskOutputs:
        logits = float_logits(output)
        predictions = logits.argmax(-1)
        return TaskOutputs(
            losses=F.cross_entropy(logits, targets, reduction="none").cpu().numpy(),
            units=np.ones(len(targets), dtype=np.int64),
            predictions=predictions.cpu().numpy(),
            correct=(predictions == targets).cpu().numpy(),
        )

    def eval_outputs(self, predictions: np.ndarray, label_ids: np.ndarray) -> TaskOutputs:
        """Logits (or class ids) and labels of an ``EvalPrediction``: argmax, and the cross-entropy
        of a plain classification head (no label smoothing, no weights) when logits are given."""
        labels = np.asarray(label_ids).astype(np.int64)
        predictions = np.asarray(predictions)
        if predictions.ndim == 2 and len(labels) != len(predictions):  # the metric names the mismatch
            predictions = predictions.argmax(axis=-1)
            return TaskOutputs(np.full(len(predictions), np.nan), np.ones(len(predictions), dtype=np.int64),
                               predictions, np.zeros(len(predictions), dtype=bool))
        if predictions.ndim == 2:
            if len(labels) and (labels.min() < 0 or labels.max() >= predictions.shape[-1]):
                raise FairQuantError(
                    f"labels must lie in [0, {predictions.shape[-1]}) to match the logits' last axis, "
                    f"got values from {labels.min()} to {labels.max()}."
                )
            logits = predictions.astype(np.float64)
            shifted = logits - logits.max(axis=-1, keepdims=True)
            losses = np.log(np.exp(shifted).sum(axis=-1)) - shifted[np.arange(len(labels)), labels]
            predictions = predictions.argmax(axis=-1)
        else:
            losses = np.full(len(predictions), np.nan)
        return TaskOutputs(losses, np.ones(len(predictions), dtype=np.int64), predictions, predictions == labels)

    @torch.no_grad()
    def logit_statistics(self, output: Any, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy, correctness, the population variance of the logits across classes (the
        paper's claim: quantized logits have lower variance), the confidence (max softmax
        probability) and the margin (true-class logit minus the best other; negative when wrong)."""
        return score_statistics(float_logits(output).detach(), targets.long())

    def snippet_predictions(self, logits: str = "logits") -> str:
        return f"predictions = {logits}.argmax(-1)  # class ids"

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
        extra = {}
        if reference is not None:
            extra = {"reference_predictions": reference.example_predictions(), "reference_losses": reference.losses}
        return metric.compute(
            predictions=outputs.example_predictions(), losses=outputs.losses, references=references, groups=groups,
            **extra, **options,
        )


CLASSIFICATION = register_task(ClassificationTask())
