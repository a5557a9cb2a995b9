"""Model-input batches from any dataset a ``transformers.Trainer`` accepts.

Audit, explain, allocation, calibration and the trainer all read data through here (labels and
groups are added by :class:`~hf_fairquant.inputs.GroupedInputs`), so they accept the same
set-ups: materialised columns of any feature type (``Array3D``,
``List``, numpy, torch) or a lazily transformed dataset (``with_transform``/``set_transform``:
rows are read through ``dataset[i:j]``, so the transform runs); an optional ``data_collator``
(default: ``DataCollatorWithPadding`` when the processing class is a tokenizer, else stacking);
a column of PIL images turned into ``pixel_values`` by the model's image processor when one is
given, else a FairQuantError saying how to preprocess.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable, Container, Iterator, Mapping, Sequence

import numpy as np
import torch

from .errors import FairQuantError
from .groups import LABEL_COLUMNS, column_names
from .tasks.causal_lm import pad_token_column

LABELS = "labels"
PIXEL_VALUES = "pixel_values"

DataCollator = Callable[[list[dict[str, Any]]], Mapping[str, Any]]


def has_transform(dataset: Any) -> bool:
    """True for a dataset formatted by ``with_transform``/``set_transform``."""
    return getattr(dataset, "format", {}).get("type") == "custom"


def first_example(dataset: Any) -> dict[str, Any]:
    """The first row as the dataset serves it (transform applied), one value per column."""
    if len(dataset) == 0:
        raise FairQuantError("the dataset is empty: it needs at least one example")
    return {k: v[0] for k, v in dict(dataset[:1]).items()}


def _is_image(value: Any) -> bool:
    return "PIL.Image" in sys.modules and isinstance(value, sys.modules["PIL.Image"].Image)


def image_processor_of(processing_class: Any) -> Any:
    """The image processor inside ``processing_class`` (itself, or a processor's ``image_processor``)."""
    if processing_class is None:
        return None
    inner = getattr(processing_class, "image_processor", None)
    if inner is not None:
        return inner
    name = type(processing_class).__name__
    return processing_class if ("ImageProcessor" in name or "FeatureExtractor" in name) else None


def _tokenizer(processing_class: Any) -> Any:
    if processing_class is None:
        return None
    from transformers import PreTrainedTokenizerBase

    inner = getattr(processing_class, "tokenizer", None)
    candidate = inner if inner is not None else processing_class
    return candidate if isinstance(candidate, PreTrainedTokenizerBase) else None


def default_collator(processing_class: Any = None) -> DataCollator | None:
    """``DataCollatorWithPadding`` for a tokenizer (dynamic padding), else None (stacking)."""
    tokenizer = _tokenizer(processing_class)
    if tokenizer is None:
        return None
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


class ModelInputs:
    """How the rows of ``dataset`` become ``model(**inputs)`` batches (see the module doc).

    Analyses the first served example once: which of its keys the model's ``forward`` takes,
    and whether a PIL image column must go through the image processor. Labels and groups are
    not its business (:class:`~hf_fairquant.inputs.GroupedInputs` adds them).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        dataset: Any,
        data_collator: DataCollator | None = None,
        processing_class: Any = None,
        token_columns: Sequence[str] = (),
    ) -> None:
        #: stored per-token columns (a causal LM's ``labels``) served with the inputs, padded with -100
        self.token_columns = list(token_columns)
        self.dataset = dataset
        self.processing_class = processing_class
        self.data_collator = data_collator if data_collator is not None else default_collator(processing_class)
        params = set(inspect.signature(model.forward).parameters)
        example = first_example(dataset)
        self.image_column: str | None = None
        if PIXEL_VALUES in params and PIXEL_VALUES not in example:
            self.image_column = next((k for k, v in example.items() if _is_image(v)), None)
            if self.image_column is not None and image_processor_of(processing_class) is None:
                raise FairQuantError(
                    f"column '{self.image_column}' holds PIL images and no image processor was given: pass "
                    "processing_class=AutoImageProcessor.from_pretrained(...) or preprocess, e.g. "
                    "ds.with_transform(lambda b: {'pixel_values': processor(b['image'], return_tensors='pt')"
                    "['pixel_values'], 'labels': b['label']})"
                )
        self.input_names = [k for k in example if k in params and k not in LABEL_COLUMNS]
        if self.image_column is not None:
            self.input_names.append(PIXEL_VALUES)
        if not self.input_names:
            raise FairQuantError(
                f"no column of the dataset is an input of {type(model).__name__}.forward; columns: "
                f"{list(example)} (stored: {column_names(dataset)}), forward takes: {sorted(params)}"
            )
        self.device = model_device(model)

    def select(self, rows: Sequence[int]) -> "ModelInputs":
        """The same batching over ``rows`` of the dataset (nothing analysed again)."""
        subset = object.__new__(ModelInputs)
        subset.__dict__.update(self.__dict__)
        subset.dataset = self.dataset.select(list(rows))
        return subset

    # ------------------------------------------------------------ batches
    def _read(self, start: int, stop: int) -> dict[str, Any]:
        """Rows ``start:stop`` of the columns the inputs need, transform applied."""
        if has_transform(self.dataset):
            return dict(self.dataset[start:stop])
        stored = [c for c in self.input_names if c != PIXEL_VALUES or self.image_column is None] + self.token_columns
        batch = dict(self.dataset.with_format("torch", columns=stored)[start:stop]) if stored else {}
        if self.image_column is not None:
            batch[self.image_column] = self.dataset.with_format(None, columns=[self.image_column])[start:stop][self.image_column]
        return batch

    def collate(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Model inputs (tensors) from a column batch: image processor, collator or stacking."""
        batch = dict(batch)
        per_token = {c: batch.pop(c) for c in self.token_columns if c in batch}
        if per_token:
            inputs = self.collate(batch)
            return {**inputs, **{c: pad_token_column(c, v, inputs) for c, v in per_token.items()}}
        if self.image_column is not None:
            processor = image_processor_of(self.processing_class)
            batch[PIXEL_VALUES] = processor(list(batch.pop(self.image_column)), return_tensors="pt")[PIXEL_VALUES]
        names = self.input_names
        if self.data_collator is not None:
            n = len(batch[names[0]])
            features = [{k: batch[k][i] for k in names} for i in range(n)]
            out = self.data_collator(features)
            return {k: torch.as_tensor(out[k]) for k in names if k in out}
        return {k: _stack(k, batch[k]) for k in names}

    def batches(
        self, batch_size: int = 256, only: Container[int] | None = None,
    ) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        """``(start, stop, inputs)`` for consecutive rows (no shuffling), on the model's device;
        ``only``: the indices of the batches to build (the others are not read)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise FairQuantError(f"batch_size must be a positive integer, got {batch_size!r}")
        cpu = self.device.type == "cpu"
        for index, start in enumerate(range(0, len(self.dataset), batch_size)):
            if only is not None and index not in only:
                continue
            stop = min(start + batch_size, len(self.dataset))
            inputs = self.collate(self._read(start, stop))
            yield start, stop, (inputs if cpu else {k: v.to(self.device) for k, v in inputs.items()})


def _stack(name: str, values: Any) -> torch.Tensor:
    """One column batch as a tensor; ragged rows need a collator (the error says which)."""
    if torch.is_tensor(values):
        return values
    if isinstance(values, np.ndarray) and values.dtype != object:
        return torch.from_numpy(values)
    items = list(values)
    if items and torch.is_tensor(items[0]):
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) == 1:
            return torch.stack(items)
    else:
        try:
            arr = np.asarray(items)
            if arr.dtype != object:
                return torch.from_numpy(arr.copy())
        except ValueError:
            pass
        shapes = {np.shape(v) for v in items}
    raise FairQuantError(
        f"column '{name}' has rows of different shapes {sorted(shapes)[:3]}: pad them, or pass "
        "data_collator=DataCollatorWithPadding(tokenizer) (or processing_class=tokenizer) for dynamic padding"
    )


def iterate_batches(
    model: torch.nn.Module,
    dataset: Any,
    batch_size: int = 256,
    data_collator: DataCollator | None = None,
    processing_class: Any = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield model-input batches of ``dataset`` in row order (see :class:`ModelInputs`), on the
    device of the model's parameters (calibration, export, speed measurements)."""
    for _, _, inputs in ModelInputs(model, dataset, data_collator, processing_class).batches(batch_size):
        yield inputs


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


__all__: Sequence[str] = [
    "LABELS", "ModelInputs", "PIXEL_VALUES", "default_collator", "first_example", "has_transform", "image_processor_of",
    "iterate_batches", "model_device",
]
