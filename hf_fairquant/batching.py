"""The one input layer: model-input batches from any dataset a ``transformers.Trainer`` accepts,
and the one forward pass every evaluation shares (predictions and per-example loss).

Audit, explain, allocation, calibration and the trainer all read data here, so they accept the
same set-ups: a ``label`` or ``labels`` column (ints, integral floats, bools or class names, see
:func:`hf_fairquant.groups.label_codes`); materialised columns of any feature type (``Array3D``,
``List``, numpy, torch) or a lazily transformed dataset (``with_transform``/``set_transform``:
rows are read through ``dataset[i:j]``, so the transform runs); an optional ``data_collator``
(default: ``DataCollatorWithPadding`` when the processing class is a tokenizer, else stacking);
a column of PIL images turned into ``pixel_values`` by the model's image processor when one is
given, else a FairQuantError saying how to preprocess.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import FairQuantError
from .groups import LABEL_COLUMNS, column_names, label_codes, label_values, resolve_label_column

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
    and whether a PIL image column must go through the image processor. Labels are read once
    (the stored ``labels``/``label`` column, else through the transform) and cast to int64 codes
    (class names through ``model.config.label2id``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        dataset: Any,
        data_collator: DataCollator | None = None,
        processing_class: Any = None,
    ) -> None:
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
        self._model_config = getattr(model, "config", None)
        self._labels: np.ndarray | None = None
        self.device = model_device(model)

    # ------------------------------------------------------------ labels
    @property
    def label_column(self) -> str:
        return resolve_label_column(self.dataset)

    def labels(self) -> np.ndarray:
        """Every row's label as an int64 class id."""
        if self._labels is None:
            column = self.label_column
            label2id = getattr(self._model_config, "label2id", None)
            self._labels = label_codes(label_values(self.dataset, column), column, "dataset", label2id)
        return self._labels

    # ------------------------------------------------------------ batches
    def _read(self, start: int, stop: int) -> dict[str, Any]:
        """Rows ``start:stop`` of the columns the inputs need, transform applied."""
        if has_transform(self.dataset):
            return dict(self.dataset[start:stop])
        stored = [c for c in self.input_names if c != PIXEL_VALUES or self.image_column is None]
        batch = dict(self.dataset.with_format("torch", columns=stored)[start:stop]) if stored else {}
        if self.image_column is not None:
            batch[self.image_column] = self.dataset.with_format(None, columns=[self.image_column])[start:stop][self.image_column]
        return batch

    def collate(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Model inputs (tensors) from a column batch: image processor, collator or stacking."""
        batch = dict(batch)
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
        self, batch_size: int = 256, with_labels: bool = True
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor | None]]:
        """``(inputs, labels)`` batches in row order (no shuffling)."""
        if batch_size <= 0:
            raise FairQuantError(f"batch_size must be positive, got {batch_size}")
        labels = torch.from_numpy(self.labels()) if with_labels else None
        cpu = self.device.type == "cpu"
        move = (lambda t: t) if cpu else (lambda t: t.to(self.device))  # noqa: E731
        for start in range(0, len(self.dataset), batch_size):
            stop = min(start + batch_size, len(self.dataset))
            inputs = {k: move(v) for k, v in self.collate(self._read(start, stop)).items()}
            yield inputs, (move(labels[start:stop]) if labels is not None else None)


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


def model_input_names(model: torch.nn.Module, dataset: Any) -> list[str]:
    """Columns of the served example that the model's ``forward`` accepts, minus the labels."""
    return ModelInputs(model, dataset).input_names


def iterate_batches(
    model: torch.nn.Module,
    dataset: Any,
    batch_size: int = 256,
    with_labels: bool = True,
    data_collator: DataCollator | None = None,
    processing_class: Any = None,
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor | None]]:
    """Yield ``(inputs, labels)`` tensor batches in row order (see :class:`ModelInputs`), on the
    device of the model's parameters."""
    return ModelInputs(model, dataset, data_collator, processing_class).batches(batch_size, with_labels)


def dataset_labels(dataset: Any, model: torch.nn.Module | None = None) -> np.ndarray:
    """Every row's label as an int64 class id (``labels`` or ``label``; names via ``label2id``)."""
    column = resolve_label_column(dataset)
    label2id = getattr(getattr(model, "config", None), "label2id", None)
    return label_codes(label_values(dataset, column), column, "dataset", label2id)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def float_logits(output: Any) -> torch.Tensor:
    """``output.logits`` (or the tensor itself) as a float tensor; quanto's quantized activations
    are dequantized (differentiably)."""
    logits = getattr(output, "logits", output)
    if "optimum.quanto" in sys.modules:  # a QTensor exists only once quanto is loaded
        from optimum.quanto import QTensor

        if isinstance(logits, QTensor):
            logits = logits.dequantize()
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


@torch.no_grad()
def predict_batches(
    model: torch.nn.Module, batches: Iterable[tuple[dict[str, torch.Tensor], torch.Tensor]]
) -> tuple[np.ndarray, np.ndarray]:
    """One pass over ``(inputs, labels)`` batches: (predicted class, per-example cross-entropy)."""
    preds, losses = [], []
    for inputs, labels in batches:
        logits = float_logits(model(**inputs))
        preds.append(logits.argmax(-1))
        losses.append(F.cross_entropy(logits, labels, reduction="none"))
    return torch.cat(preds).cpu().numpy(), torch.cat(losses).cpu().numpy()


__all__: Sequence[str] = [
    "LABELS", "ModelInputs", "PIXEL_VALUES", "dataset_labels", "default_collator", "first_example",
    "float_logits", "has_transform", "image_processor_of", "model_device", "iterate_batches", "model_input_names", "predict_batches",
]
