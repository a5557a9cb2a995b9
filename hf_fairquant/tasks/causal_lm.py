"""Causal language modelling: next-token prediction, scored token by token.

Per example: the mean next-token negative log-likelihood (NLL) over its scored tokens and their
count (the example's units); per scored token: the top-1 prediction (argmax of the logits) and
whether it is the next token. What is scored follows transformers' convention for causal LMs: a
position whose label is ``-100`` is not scored. The labels are a ``labels`` column when the data
has one (prompt tokens masked with ``-100``, as ``DataCollatorForSeq2Seq`` pads them), else the
input ids with padding (``attention_mask == 0``) masked; the target of position *t* is the label
of position *t + 1* (the shift transformers' ``ForCausalLMLoss`` makes), so the first token is
never a target. Everything is batched tensor work: no per-token Python.

Per group the ``group_disparity`` metric (its language-model mode) weighs each example's mean NLL
by its scored tokens: the group's mean NLL is its summed token NLL over its tokens and its
perplexity ``exp`` of that. Against a reference model (the full-precision one) on the same
examples it reports the paired NLL increase per group, its spread over groups, and the share of
tokens whose top-1 prediction is the reference's (the LM's "flip rate" is one minus that).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FairQuantError
from .base import MetricNames, Task, TaskOutputs, float_logits, head_kind
from .registry import register_task

#: transformers' "not scored" label.
IGNORE_INDEX = -100
#: The data column holding per-token labels (``-100`` where not scored).
LABELS_COLUMN = "labels"
_HEADS = ("ForCausalLM", "LMHeadModel")


def has_token_labels(dataset: Any) -> bool:
    """Whether ``dataset`` has a ``labels`` column of per-token lists (a column of strings or class
    ids named ``labels`` — e.g. a language-identification dataset's language — is not one)."""
    if LABELS_COLUMN not in getattr(dataset, "column_names", []):
        return False
    feature = (getattr(dataset, "features", None) or {}).get(LABELS_COLUMN)
    return feature is None or isinstance(feature, list) or type(feature).__name__ in ("Sequence", "List", "LargeList")


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """The target of every position: the label of the next one (``-100`` after the last)."""
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), IGNORE_INDEX)], dim=1)


def pad_token_column(name: str, values: Any, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A per-token column (one list per row, e.g. a causal LM's labels) as a tensor shaped like the
    collated ``input_ids``: each row's values where its ``attention_mask`` is 1 (so left and right
    padding both work), -100 on padding. Rows must be as long as their unpadded inputs."""
    rows = [torch.as_tensor(v, dtype=torch.long).reshape(-1) for v in values]
    ids = inputs.get("input_ids")
    mask = inputs.get("attention_mask")
    if ids is None:
        raise FairQuantError(f"column '{name}' holds one value per token, but the batch has no input_ids to align it with")
    mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask)
    lengths = mask.sum(-1).tolist()
    for i, (row, n) in enumerate(zip(rows, lengths)):
        if row.numel() != n:
            raise FairQuantError(
                f"row {i} of a batch has {row.numel()} '{name}' values for {n} tokens: give one per input token "
                "(-100 where a token is not scored), truncated like the inputs"
            )
    out = torch.full(tuple(ids.shape), IGNORE_INDEX, dtype=torch.long)
    out[mask.cpu().bool()] = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    return out


class LanguageModelingCollator:
    """A causal LM's training collator: ``inner`` (e.g. ``DataCollatorWithPadding``; None:
    ``transformers.default_data_collator``) collates the inputs, then ``labels`` are added: each
    row's own ``labels`` list placed where ``attention_mask`` is 1 (-100 on padding), or, for data
    without a labels column, the ``input_ids`` with padding masked — whichever side the tokenizer
    pads. (transformers' ``DataCollatorForLanguageModeling(mlm=False)`` masks every pad-token id
    instead, which drops real end-of-text tokens when the pad token is the eos token, and it
    ignores a labels column.)"""

    def __init__(self, inner: Callable[[list], Mapping[str, Any]] | None = None) -> None:
        self.inner = inner

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        labels = [f.get(LABELS_COLUMN) for f in features]  # a non-list "labels" (e.g. a language name) is not per-token
        labels = [v if v is None or torch.is_tensor(v) or isinstance(v, (list, tuple, np.ndarray)) else None for v in labels]
        rest = [{k: v for k, v in f.items() if k != LABELS_COLUMN} for f in features]
        if self.inner is None:
            from transformers import default_data_collator

            batch = dict(default_data_collator(rest))
        else:
            batch = dict(self.inner(rest))
        for key in ("input_ids", "attention_mask"):
            if key in batch and not torch.is_tensor(batch[key]):
                batch[key] = torch.as_tensor(batch[key])
        if all(v is not None for v in labels):
            batch[LABELS_COLUMN] = pad_token_column(LABELS_COLUMN, labels, batch)
        elif any(v is not None for v in labels):
            raise FairQuantError("some rows have labels and some do not: give every row a labels list, or none")
        else:
            ids, mask = batch["input_ids"].long(), batch.get("attention_mask")
            batch[LABELS_COLUMN] = ids if mask is None else ids.masked_fill(mask == 0, IGNORE_INDEX)
        return batch


class CausalLMTask(Task):
    name = "causal-lm"
    metric_names = MetricNames(
        overall="perplexity", group="group_perplexity", gap="perplexity_gap", worst_group="worst_group",
        worst_value="worst_group_perplexity", drop="group_loss_increase", disparate="disparate_loss_increase",
        gap_change="perplexity_gap_change", flip="flip_rate", label="perplexity", unit="", higher_is_better=False,
        model_index_type="perplexity",
    )
    #: per-batch references: a data column collated with the inputs (padded with -100)
    batch_label_column = LABELS_COLUMN
    #: what a scored unit is (explain samples groups at equal numbers of them)
    unit_name = "token"
    #: the data has no class label column (the targets are the text's tokens)
    uses_class_labels = False

    def has_batch_labels(self, dataset: Any) -> bool:
        return has_token_labels(dataset)

    def training_collator(self, inner: Any = None) -> LanguageModelingCollator:
        return LanguageModelingCollator(inner)

    def handles(self, architecture: str) -> bool:
        kind = head_kind(architecture)
        if kind is not None:
            return kind == "causal-lm"
        return architecture.endswith(_HEADS)

    def auto_class(self, modality: str) -> str:
        if modality != "text":
            raise FairQuantError(f"the task {self.name!r} models text; data of modality {modality!r} has no tokens to predict")
        return "AutoModelForCausalLM"

    def pipeline_tag(self, modality: str) -> str:
        return "text-generation"

    def check_forward(self, output: Any, references: np.ndarray | None, model: torch.nn.Module) -> None:
        logits = float_logits(output)
        if logits.ndim != 3:
            raise FairQuantError(
                f"{type(model).__name__} gives logits of shape {tuple(logits.shape)}; the task {self.name!r} needs "
                "(batch, sequence, vocabulary): a …ForCausalLM model"
            )

    def needs_forward_check(self, model: torch.nn.Module) -> bool:
        return getattr(model, "config", None) is None

    # ------------------------------------------------------------ data
    def references(self, dataset: Any, model: torch.nn.Module, where: str) -> None:
        """No per-row references: the targets are the text's own tokens (or its ``labels``
        column), collated with each batch. Every row must score at least one token: two input
        ids at least, and a ``labels`` column as long as ``input_ids`` with a label other than
        -100 after its first position (checked on the stored Arrow columns, no row decoded)."""
        columns = getattr(dataset, "column_names", [])
        if "input_ids" not in columns:
            return None  # a lazily transformed dataset: checked per batch (an example without a target fails there)
        import pyarrow.compute as pc

        token_labels = has_token_labels(dataset)
        table = dataset.with_format("arrow", columns=["input_ids"] + ([LABELS_COLUMN] if token_labels else []))[:]
        ids = table["input_ids"]
        if not hasattr(ids.type, "value_type"):
            raise FairQuantError(f"input_ids of {where} must be a list of token ids per row, got {ids.type}")
        lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False)
        short = np.flatnonzero(lengths < 2)
        if short.size:
            raise FairQuantError(
                f"row {int(short[0])} of {where} has {int(lengths[short[0]])} token(s) ({short.size} such row(s)): a "
                "causal LM scores the tokens after the first, so every row needs at least 2 (drop empty texts, or "
                "let the tokenizer add a beginning-of-text token)"
            )
        if token_labels:
            labels = table[LABELS_COLUMN]
            label_lengths = pc.list_value_length(labels).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(label_lengths != lengths)
            if bad.size:
                i = int(bad[0])
                raise FairQuantError(
                    f"row {i} of {where} has {int(label_lengths[i])} labels for {int(lengths[i])} input ids: a causal "
                    "LM's labels are one per input token (-100 where not scored)"
                )
            flat = pc.list_flatten(pc.list_slice(labels, 1)).to_numpy(zero_copy_only=False)
            starts = np.concatenate([[0], np.cumsum(np.maximum(label_lengths - 1, 0))[:-1]])
            scored = np.add.reduceat((flat != IGNORE_INDEX).astype(np.int64), starts) if flat.size else np.zeros(0)
            scored = np.where(label_lengths > 1, scored, 0)
            none = np.flatnonzero(scored == 0)
            if none.size:
                raise FairQuantError(
                    f"row {int(none[0])} of {where} scores no token: its labels are -100 everywhere after the first "
                    f"position ({none.size} such row(s)); drop those rows"
                )
        return None

    def targets(self, inputs: Mapping[str, torch.Tensor], references: torch.Tensor | None) -> torch.Tensor:
        """``(batch, sequence)`` next-token targets, ``-100`` where nothing is scored."""
        if references is None:
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            references = ids if mask is None else ids.masked_fill(mask == 0, IGNORE_INDEX)
        return shift_labels(references.long())

    def units(self, targets: torch.Tensor) -> torch.Tensor:
        """Scored tokens per example."""
        return (targets != IGNORE_INDEX).sum(-1)

    def limit_units(self, targets: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``targets`` scoring only the first ``keep[i]`` scored tokens of each example."""
        scored = targets != IGNORE_INDEX
        rank = scored.long().cumsum(-1)
        return targets.masked_fill(scored & (rank > keep.to(rank.device)[:, None]), IGNORE_INDEX)

    # ------------------------------------------------------------ per example
    def _token_nll(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.shape[:2] != targets.shape:
            raise FairQuantError(
                f"logits of shape {tuple(logits.shape)} do not fit targets of shape {tuple(targets.shape)}: "
                "one row of logits per input token is needed"
            )
        flat = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
        return flat.view(targets.shape)

    def loss(self, output: Any, targets: torch.Tensor) -> torch.Tensor:
        """Per-example mean NLL over its scored tokens (differentiable)."""
        nll = self._token_nll(float_logits(output), targets)
        return nll.sum(-1) / self.units(targets).clamp(min=1).to(nll.dtype)

    @torch.no_grad()
    def batch_outputs(self, output: Any, targets: torch.Tensor) -> TaskOutputs:
        logits = float_logits(output)
        nll = self._token_nll(logits, targets)
        scored = targets != IGNORE_INDEX
        units = scored.sum(-1)
        predictions = logits.argmax(-1)
        return TaskOutputs(
            losses=(nll.sum(-1) / units.clamp(min=1)).cpu().numpy().astype(np.float64),
            units=units.cpu().numpy().astype(np.int64),
            predictions=predictions[scored].cpu().numpy(),
            correct=(predictions == targets)[scored].cpu().numpy(),
        )

    @torch.no_grad()
    def logit_statistics(self, output: Any, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example, means over its scored tokens: NLL, top-1 accuracy, the population variance
        of the logits over the vocabulary (does quantization shrink the per-token logit spread?),
        the confidence (max softmax probability) and the margin (next token's logit minus the
        best other; negative when the top-1 prediction is wrong)."""
        logits = float_logits(output).detach()
        scored = targets != IGNORE_INDEX
        safe = targets.clamp(min=0)
        weight = scored.to(logits.dtype)
        units = weight.sum(-1).clamp(min=1)
        top2 = logits.topk(2, dim=-1)
        true = logits.gather(-1, safe[..., None]).squeeze(-1)
        best_other = torch.where(top2.indices[..., 0] == safe, top2.values[..., 1], top2.values[..., 0])
        per_token = {
            "loss": self._token_nll(logits, targets),
            "correct": (top2.indices[..., 0] == safe).to(logits.dtype),
            "logit_variance": logits.var(dim=-1, unbiased=False),
            "confidence": (top2.values[..., 0] - logits.logsumexp(-1)).exp(),
            "margin": true - best_other,
        }
        return {k: (v * weight).sum(-1) / units for k, v in per_token.items()}

    def snippet_predictions(self, logits: str = "logits") -> str:
        return f"next_tokens = {logits}.argmax(-1)  # top-1 next-token ids"

    # ------------------------------------------------------------ Trainer evaluation
    def preprocess_logits_for_metrics(self) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        """For ``Trainer(preprocess_logits_for_metrics=...)``: each batch's logits become
        ``(batch, 3)`` per-example [mean NLL, scored tokens, correct tokens], so evaluation keeps
        no (examples × tokens × vocabulary) array."""
        def reduce(logits: Any, labels: Any) -> torch.Tensor:
            labels = labels[0] if isinstance(labels, (tuple, list)) else labels
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            out = self.batch_outputs(logits, shift_labels(labels.long()))
            starts = np.concatenate([[0], np.cumsum(out.units)[:-1]])
            hits = np.add.reduceat(out.correct.astype(np.float64), starts) if out.correct.size else np.zeros(len(out.units))
            hits = np.where(out.units > 0, hits, 0.0)
            return torch.from_numpy(np.stack([out.losses, out.units.astype(np.float64), hits], axis=1)).to(logits.device)
        return reduce

    def eval_outputs(self, predictions: np.ndarray, label_ids: np.ndarray) -> TaskOutputs:
        """The ``(examples, 3)`` arrays :meth:`preprocess_logits_for_metrics` made: losses and
        units as measured; the per-token predictions are not kept (-1), their correctness is."""
        predictions = np.asarray(predictions)
        if predictions.ndim != 2 or predictions.shape[1] != 3:
            raise FairQuantError(
                f"causal-lm evaluation needs the (examples, 3) arrays of its preprocess_logits_for_metrics, got shape "
                f"{predictions.shape}: pass preprocess_logits_for_metrics=task.preprocess_logits_for_metrics()"
            )
        units = predictions[:, 1].round().astype(np.int64)
        hits = predictions[:, 2].round().astype(np.int64)
        correct = np.concatenate([np.arange(u) < h for u, h in zip(units.tolist(), hits.tolist())]) if len(units) else np.zeros(0, bool)
        return TaskOutputs(predictions[:, 0].astype(np.float64), units, np.full(int(units.sum()), -1), correct)

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
        """The metric's language-model mode: token-weighted NLL and perplexity per group; against
        ``reference`` the paired NLL increase and the per-token top-1 agreement."""
        if (outputs.units <= 0).any():
            row = int(np.flatnonzero(outputs.units <= 0)[0])
            raise FairQuantError(f"example {row} scores no token: a causal LM needs at least one target per example")
        extra = {}
        if reference is not None:
            extra = {"reference_losses": reference.losses, "agreement": outputs.agreement(reference)}
        options = {k: v for k, v in options.items() if k != "p_adjust"}
        return metric.compute(groups=groups, losses=outputs.losses, loss_weights=outputs.units, **extra, **options)


CAUSAL_LM = register_task(CausalLMTask())
