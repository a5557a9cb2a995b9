"""GroupedInputs: a dataset made ready for one model, checked once — inputs, references, groups.

Audit, explain, allocation, calibration and the trainer all take a ``datasets.Dataset`` as a
``Trainer`` does (model inputs, a label column, group column(s); materialised or through
``with_transform``; a ``data_collator`` / ``processing_class``), or a :class:`GroupedInputs`
built from one. Building it validates everything before any heavy work, in one place: the group
columns, the references the task reads (class labels within the model's classes, names through
``config.label2id``), the columns the model's ``forward`` takes, the image size and text length
against the model's config, and one forward on one example (a model without a config is checked
against the logits of one forward: a label with no logit, or a one-logit "classifier", fails here).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Container, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ._compiled import CompiledForward
from ._distributed import gather_in_order, my_share
from .batching import ModelInputs
from .data.preprocessing import check_image_size
from .errors import FairQuantError
from .groups import GroupSpec, as_group_spec
from .tasks import Task, TaskOutputs, task_of

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]


class GroupedInputs:
    """``dataset`` prepared for ``model`` under ``task`` (default: the task of the model's head)
    with the groups of ``group_spec`` (fitted on ``dataset`` when it is not fitted)."""

    def __init__(
        self,
        model: torch.nn.Module,
        dataset: Any,
        group_spec: GroupSpec | str | Sequence[str] = "group",
        *,
        task: Task | str | None = None,
        data_collator: Any = None,
        processing_class: Any = None,
        split: str = "eval",
    ) -> None:
        _check_is_dataset(dataset, split)
        where = f"split '{split}'"
        if len(dataset) == 0:
            raise FairQuantError(f"{where} is empty: it needs at least one example")
        self.task = task_of(model, task)
        dataset = self.task.prepare_dataset(dataset, processing_class)  # e.g. multiple choice: context + options
        spec = as_group_spec(group_spec)
        spec.check_groups(dataset, split)
        self.spec = spec if spec.is_fitted else spec.fit(dataset)
        self.split = split
        self.dataset = dataset
        self.references = self.task.references(dataset, model, where)
        if data_collator is None:  # the task's own (multiple choice: a shared-prefix attention mask), else the default
            data_collator = self.task.evaluation_collator(model, processing_class)
        token_columns = [self.task.batch_label_column] if self.task.has_batch_labels(dataset) else []
        self.model_inputs = ModelInputs(model, dataset, data_collator, processing_class, token_columns=token_columns)
        config = getattr(model, "config", None)
        if config is not None:
            check_image_size(config, dataset)
            check_text_length(config, dataset, where)
        if self.task.needs_forward_check(model):
            self._check_forward(model)

    @classmethod
    def of(
        cls, model: torch.nn.Module, data: "Any | GroupedInputs", group_spec: Any = "group", **options: Any
    ) -> "GroupedInputs":
        """``data`` itself when it is a GroupedInputs already (its groups must be ``group_spec``'s
        columns), else a new one built from the dataset ``data``."""
        if isinstance(data, GroupedInputs):
            columns = as_group_spec(group_spec).columns
            if columns != data.spec.columns:
                raise FairQuantError(
                    f"these GroupedInputs group by {list(data.spec.columns)}, not by {list(columns)}: build them with "
                    "the group columns you audit"
                )
            return data
        return cls(model, data, group_spec, **options)

    def _check_forward(self, model: torch.nn.Module) -> None:
        """One forward on one example: the task gets its outputs and every reference has a loss."""
        _, _, first = next(self.model_inputs.select([0]).batches(1))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                output = model(**first)
        finally:
            model.train(was_training)
        self.task.check_forward(output, self.references, model)

    # ------------------------------------------------------------ what it holds
    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def data_collator(self) -> Any:
        return self.model_inputs.data_collator

    @property
    def processing_class(self) -> Any:
        return self.model_inputs.processing_class

    @cached_property
    def codes(self) -> np.ndarray:
        """Every row's group code under :attr:`spec`."""
        return self.spec.encode(self.dataset)

    def group_names(self) -> list[str]:
        """Every row's group name."""
        return self.spec.decode(self.codes)

    def with_spec(self, spec: GroupSpec) -> "GroupedInputs":
        """The same inputs with a spec fitted on more data (e.g. the evaluation and calibration splits)."""
        if spec.columns != self.spec.columns:
            raise FairQuantError(f"a spec of columns {list(spec.columns)} does not fit inputs grouped by {list(self.spec.columns)}")
        other = self._copy()
        other.spec = spec
        other.__dict__.pop("codes", None)
        return other

    def select(self, rows: Sequence[int] | np.ndarray) -> "GroupedInputs":
        """The same inputs over ``rows`` (row order kept; nothing checked again)."""
        rows = np.asarray(rows, dtype=np.int64)
        other = self._copy()
        other.dataset = self.dataset.select(rows.tolist())
        other.model_inputs = self.model_inputs.select(rows.tolist())
        other.references = self.references[rows] if self.references is not None else None
        if "codes" in self.__dict__:
            other.__dict__["codes"] = self.codes[rows]
        return other

    def _copy(self) -> "GroupedInputs":
        other = object.__new__(GroupedInputs)
        other.__dict__.update(self.__dict__)
        return other

    # ------------------------------------------------------------ batches and passes
    def batches(self, batch_size: int = 256, only: Container[int] | None = None) -> Iterator[Batch]:
        """``(inputs, targets)`` batches in row order, on the model's device (``only``: the indices
        of the batches to build)."""
        device = self.model_inputs.device
        token_columns = self.model_inputs.token_columns
        for start, stop, inputs in self.model_inputs.batches(batch_size, only):
            if token_columns:  # per-token references collated with the inputs (a causal LM's labels)
                refs = inputs.pop(token_columns[0])
            else:
                refs = None if self.references is None else torch.from_numpy(self.references[start:stop]).to(device)
            yield inputs, self.task.targets(inputs, refs)

    def input_batches(self, batch_size: int = 256) -> Iterator[dict[str, torch.Tensor]]:
        """Model-input batches only (calibration, speed measurements)."""
        for _, _, inputs in self.model_inputs.batches(batch_size):
            for column in self.model_inputs.token_columns:
                inputs.pop(column, None)
            yield inputs

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def outputs(
        self,
        model: torch.nn.Module,
        batch_size: int = 256,
        desc: str | None = None,
        *,
        torch_compile: bool = False,
        shard: bool = False,
        timings: dict[str, float] | None = None,
    ) -> TaskOutputs:
        """One pass of ``model`` (eval mode, no gradient) → the task's per-example outputs.

        ``torch_compile``: through ``torch.compile`` (eager if it cannot compile the model; the
        compile seconds go to ``timings["compile_s"]``, a fallback sets ``timings["compile_failed"]``).
        ``shard``: under several processes (``torch.distributed``) each evaluates every
        world-size-th batch and the outputs are gathered in row order on every process — the same
        outputs as one process's, bit for bit; every process must make the call."""
        model.eval()
        forward = CompiledForward(model, torch_compile)
        total = self.num_batches(batch_size)
        mine = my_share(total, shard)
        parts: dict[int, TaskOutputs] = {}
        with torch.no_grad():
            batches = zip(mine, self.batches(batch_size, only=set(mine)))
            for index, (inputs, targets) in tqdm(batches, total=len(mine), desc=desc, disable=desc is None, leave=False):
                parts[index] = self.task.batch_outputs(forward(**inputs), targets)
        if timings is not None and forward.enabled:
            timings["compile_s"] = forward.compile_s
            if forward.failed:
                timings["compile_failed"] = 1.0
        return TaskOutputs.concatenate(gather_in_order(parts, total, shard))


def _check_is_dataset(dataset: Any, split: str) -> None:
    """A ``datasets.Dataset`` (or anything with rows and column names), not a DatasetDict."""
    if isinstance(dataset, dict) or type(dataset).__name__ in ("DatasetDict", "IterableDatasetDict"):
        raise FairQuantError(
            f"the {split} data is a {type(dataset).__name__} of splits {list(dataset)}: pass one split, "
            f"e.g. ds[{next(iter(dataset), 'test')!r}]"
        )
    if not hasattr(dataset, "column_names") or not hasattr(dataset, "select"):
        raise FairQuantError(
            f"the {split} data must be a datasets.Dataset with named columns, got {type(dataset).__name__}"
        )


def check_text_length(config: Any, dataset: Any, where: str = "dataset") -> None:
    """Stored ``input_ids`` rows no longer than the model's ``max_position_embeddings`` (read from
    the Arrow column's list lengths, no row is decoded). Rows with stored ``position_ids`` (a
    packed multiple-choice item: options share the context's positions) are checked by their
    largest position instead of their length."""
    limit = getattr(config, "max_position_embeddings", None)
    columns = getattr(dataset, "column_names", [])
    if not isinstance(limit, int) or "input_ids" not in columns:
        return
    import pyarrow.compute as pc

    if "position_ids" in columns:
        column = dataset.with_format("arrow", columns=["position_ids"])[:]["position_ids"]
        if not hasattr(column.type, "value_type"):
            return
        largest = pc.max(pc.list_flatten(column)).as_py()
        if largest is not None and largest + 1 > limit:
            raise FairQuantError(
                f"rows of {where} reach position {largest} (a context and its longest option: {largest + 1} tokens) but "
                f"the model has max_position_embeddings={limit}: shorten the contexts or drop those rows"
            )
        return
    column = dataset.with_format("arrow", columns=["input_ids"])[:]["input_ids"]  # the rows selected, as Arrow
    if not hasattr(column.type, "value_type"):
        return
    longest = pc.max(pc.list_value_length(column)).as_py()
    if longest is not None and longest > limit:
        raise FairQuantError(
            f"input_ids of {where} hold up to {longest} tokens but the model has max_position_embeddings={limit}: "
            f"truncate to {limit} (tokenizer(..., truncation=True, max_length={limit}))"
        )


__all__ = ["GroupedInputs", "check_text_length"]
