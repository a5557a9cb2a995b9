"""Turn raw image/text datasets into model inputs (``pixel_values`` or token ids) + ``labels``.

Images go through the model's image processor when one is given; otherwise through a small
documented transform: scale to [0, 1], standardise each channel by the *training split's*
pixel mean and std, lay out channel-first (grayscale gets one channel). No resizing: the
model must be built for the data's image size (checked by :func:`check_image_size`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from datasets import Array3D, ClassLabel, DatasetDict, Features, Value

from ..batching import LABELS
from ..errors import FairQuantError


@dataclass(frozen=True)
class ImageStandardizer:
    """The documented default transform: ``(image / 255 − mean_c) / std_c``, channel-first."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, images: Sequence[Any]) -> "ImageStandardizer":
        arr = np.stack([_to_chw(im) for im in images])
        return cls(tuple(arr.mean(axis=(0, 2, 3)).tolist()), tuple(np.maximum(arr.std(axis=(0, 2, 3)), 1e-6).tolist()))

    def image_processor(self, size: tuple[int, int]) -> Any:
        """This transform as a transformers image processor (saved beside a published model, so
        ``pipeline("image-classification", model=folder)`` preprocesses as training did): rescale
        by 1/255, normalise by the fitted mean/std, at the data's ``(height, width)`` (no resize
        happens for images of that size)."""
        from transformers import ViTImageProcessor

        return ViTImageProcessor(
            do_resize=True, size={"height": int(size[0]), "width": int(size[1])}, do_rescale=True,
            rescale_factor=1 / 255, do_normalize=True, image_mean=list(self.mean), image_std=list(self.std),
        )

    def __call__(self, images: Sequence[Any]) -> np.ndarray:
        arr = np.stack([_to_chw(im) for im in images])
        mean = np.asarray(self.mean, dtype=np.float32)[None, :, None, None]
        std = np.asarray(self.std, dtype=np.float32)[None, :, None, None]
        return ((arr - mean) / std).astype(np.float32)


def _to_chw(image: Any) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else np.transpose(arr, (2, 0, 1))


def prepare_image_dataset(
    dataset: DatasetDict,
    image_column: str = "image",
    label_column: str = "label",
    image_processor: Any = None,
    train_split: str = "train",
    fit_sample: int = 10_000,
) -> tuple[DatasetDict, Any]:
    """Add ``pixel_values`` (float32, C×H×W) and ``labels``; drop the raw image column. Returns
    the splits and the image processor that made them — ``image_processor``, or without one the
    fitted default transform as a transformers processor (:meth:`ImageStandardizer.image_processor`),
    to publish beside the model.

    Other columns (groups, class names) are kept. Without ``image_processor`` the mean/std
    come from up to ``fit_sample`` training images (a fixed prefix: deterministic).
    """
    first = next(iter(dataset.values()))
    for col in (image_column, label_column):
        if col not in first.column_names:
            raise FairQuantError(f"column '{col}' not found; available columns: {first.column_names}")
    if image_processor is None:
        fit_on = dataset[train_split] if train_split in dataset else first
        transform = ImageStandardizer.fit(fit_on[image_column][: min(fit_sample, len(fit_on))])
    else:
        def transform(images: Sequence[Any]) -> np.ndarray:
            return np.asarray(image_processor(list(images), return_tensors="np")["pixel_values"], dtype=np.float32)

    shape = transform(first[image_column][:1]).shape[1:]

    def convert(batch: dict) -> dict:
        return {"pixel_values": transform(batch[image_column]), LABELS: batch[label_column]}

    out = {}
    for split, ds in dataset.items():
        features = Features({k: v for k, v in ds.features.items() if k not in (image_column, label_column)})
        features["pixel_values"] = Array3D(shape=tuple(shape), dtype="float32")
        features[LABELS] = _label_feature(ds.features[label_column])
        remove = [image_column] + ([label_column] if label_column != LABELS else [])
        out[split] = ds.map(
            convert, batched=True, batch_size=1000, remove_columns=remove, features=features,
            desc=f"preprocess {split}",
        )
    return DatasetDict(out), (transform.image_processor(shape[-2:]) if image_processor is None else image_processor)


def _label_feature(feature: Any) -> Any:
    """Keep a ClassLabel (its names become the model's id2label) or class-name strings (mapped
    through the model's label2id when the model is known); anything else is int64."""
    if isinstance(feature, ClassLabel) or (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        return feature
    return Value("int64")


def prepare_text_dataset(
    dataset: DatasetDict,
    tokenizer: Any,
    text_column: str = "text",
    label_column: str | None = "label",
    max_length: int | None = None,
    padding: bool | str = False,
) -> DatasetDict:
    """Tokenise ``text_column`` and rename the label to ``labels`` (a ``ClassLabel`` stays one, as
    in :func:`prepare_image_dataset`); ``label_column`` None (a causal LM's text) only tokenises.

    Truncates to ``max_length`` (None: the tokenizer's ``model_max_length`` when it is a real
    limit); no padding by default — batches are padded dynamically by ``DataCollatorWithPadding``
    in the input layer and the trainer. ``padding="max_length"`` pads every row instead.
    """
    first = next(iter(dataset.values()))
    for col in (text_column, label_column):
        if col is not None and col not in first.column_names:
            raise FairQuantError(f"column '{col}' not found; available columns: {first.column_names}")
    limit = max_length if max_length is not None else text_length_limit(tokenizer)

    def convert(batch: dict) -> dict:
        enc = tokenizer(batch[text_column], padding=padding, truncation=True, max_length=limit)
        return {**enc, LABELS: batch[label_column]} if label_column is not None else dict(enc)

    remove = [text_column] + ([label_column] if label_column not in (None, LABELS) else [])
    out = {}
    for split, ds in dataset.items():
        tokenized = ds.map(convert, batched=True, remove_columns=remove, desc=f"tokenize {split}")
        if label_column is not None and isinstance(ds.features[label_column], ClassLabel):  # names → id2label
            tokenized = tokenized.cast_column(LABELS, ds.features[label_column])
        out[split] = tokenized
    return DatasetDict(out)


def text_length_limit(tokenizer: Any = None, model_config: Any = None) -> int | None:
    """The longest input both allow: min(tokenizer.model_max_length, config.max_position_embeddings);
    None when neither sets a real limit (tokenizers without one report ~1e30)."""
    limits = [getattr(tokenizer, "model_max_length", None), getattr(model_config, "max_position_embeddings", None)]
    limits = [int(v) for v in limits if isinstance(v, (int, float)) and 0 < v < 1_000_000]
    return min(limits) if limits else None


def check_image_size(model_config: Any, dataset: Any) -> None:
    """Fail early when the data's channels or size differ from what the model was built for.

    Reads the first example as the dataset serves it (after ``with_transform``; any feature
    type: Array3D, nested lists, numpy, torch), not the feature schema. A dataset without
    ``pixel_values`` (text, or PIL images that an image processor will resize) is not checked.
    """
    if len(dataset) == 0:
        return
    first = dataset[:1]
    if "pixel_values" not in first:
        return
    shape = tuple(np.shape(np.asarray(first["pixel_values"][0], dtype=np.float32)))
    if len(shape) != 3:
        raise FairQuantError(f"pixel_values of one example must be channels × height × width, got shape {shape}")
    channels = getattr(model_config, "num_channels", None)
    if channels is not None and shape[0] != channels:
        raise FairQuantError(f"the model expects {channels} channel(s) (config.num_channels) but the data has {shape[0]}")
    size = getattr(model_config, "image_size", None)
    if size is None:
        return
    want = (size, size) if isinstance(size, int) else tuple(size)
    if shape[-2:] != want:
        raise FairQuantError(
            f"the model expects {want[0]}×{want[1]} images (config.image_size) but the data has {shape[-2]}×{shape[-1]}"
        )
