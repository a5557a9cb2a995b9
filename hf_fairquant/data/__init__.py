"""Grouped datasets: offline sources, Hub ids / local files, long-tail groups, preprocessing."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from datasets import DatasetDict

from .._config import split_commas
from ..errors import FairQuantError
from ..groups import GroupSpec
from .adult import load_adult
from .long_tail import HEAD, TAIL, make_long_tailed
from .manpages import detect_script, load_manpages
from .preprocessing import (
    ImageStandardizer,
    check_image_size,
    prepare_image_dataset,
    prepare_text_dataset,
    text_length_limit,
)
from .sources import (
    FASHION_MNIST_CLASSES,
    OFFLINE_SOURCES,
    SOURCE_COLUMNS,
    check_source_options,
    load_digits_dataset,
    load_fashion_mnist,
    load_source,
    source_columns,
)
from .stereotypes import load_crows_pairs, load_stereoset
from .tokenizer import BPE, WORDLEVEL, train_bpe_tokenizer, train_wordlevel_tokenizer

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO",
    "BPE",
    "DataConfig",
    "FASHION_MNIST_CLASSES",
    "HEAD",
    "TAIL",
    "ImageStandardizer",
    "OFFLINE_SOURCES",
    "SOURCE_COLUMNS",
    "check_image_size",
    "check_subset",
    "WORDLEVEL",
    "detect_script",
    "load_adult",
    "load_crows_pairs",
    "load_digits_dataset",
    "load_fashion_mnist",
    "load_grouped_dataset",
    "load_manpages",
    "load_raw_grouped_dataset",
    "load_source",
    "load_stereoset",
    "make_long_tailed",
    "prepare_image_dataset",
    "prepare_text_dataset",
    "preprocess_grouped_dataset",
    "source_columns",
    "train_bpe_tokenizer",
    "train_wordlevel_tokenizer",
    "text_length_limit",
]


#: A column option left at this value takes the source's default (:data:`SOURCE_COLUMNS`).
AUTO = "auto"
_COLUMN_FIELDS = ("image_column", "text_column", "label_column")


@dataclass
class DataConfig:
    """Where the data comes from and which columns carry labels and groups (YAML section ``data``;
    the CLI's ``audit``/``explain`` data options, generated from these fields).

    The column options default to the source's columns (:data:`SOURCE_COLUMNS`): ``adult`` is
    text (``text``, groups ``sex``×``race``), ``manpages`` text without a label (groups
    ``language``), ``stereoset``/``crows_pairs`` multiple choice (``context``, ``label``, groups
    ``bias_type``); ``fashion_mnist``, ``digits``, Hub datasets and local files ``image`` /
    ``label`` / ``group``. A value given explicitly is kept; naming only one of ``image_column``
    and ``text_column`` sets the other to None. The defaults are resolved when the config is made
    (``dataclasses.replace(config, source=...)`` keeps the resolved columns of the old source).

    ``long_tail_classes`` non-empty derives head/tail groups (see :func:`make_long_tailed`)
    into ``group`` — then ``group_columns`` may name ``group`` or the label column. On the CLI,
    ``train_split`` is ``--calibration-split`` (what calibrates activations) and ``eval_split``
    ``--split`` (what is evaluated). ``source_options`` are keyword arguments of the offline
    source's loader (``{"languages": "de,ja,ru", "max_chars": 1000}`` for ``manpages``), or of
    ``datasets.load_dataset`` for a Hub id; on the CLI a JSON object.
    """

    source: str = field(
        default="fashion_mnist",
        metadata={"help": f"offline source ({', '.join(OFFLINE_SOURCES)}), local path or Hub dataset id",
                  "aliases": ["--dataset"]},
    )
    subset: str | None = field(default=None, metadata={"help": "the Hub dataset's configuration (load_dataset's `name`)"})
    source_options: dict | str | None = field(
        default=None,
        metadata={"help": "keyword arguments of the offline source's loader or of load_dataset (a JSON object on the CLI)"},
    )
    group_columns: list[str] = field(
        default_factory=list,
        metadata={"help": "column(s) defining groups; several (or a comma list) give intersections a×b "
                          "(default: the source's, e.g. language for manpages, else group)",
                  "aliases": ["--group-column"]},
    )
    label_column: str | None = field(
        default=AUTO, metadata={"help": "the class label column (auto: the source's; none for manpages)"}
    )
    image_column: str | None = field(
        default=AUTO, metadata={"help": "the image column, image models (auto: the source's; image for Hub datasets)"}
    )
    text_column: str | None = field(
        default=AUTO, metadata={"help": "the text column, text models; overrides image_column (auto: the source's)"}
    )
    train_split: str = field(
        default="train", metadata={"help": "the training split (calibration data)", "aliases": ["--calibration-split"]}
    )
    eval_split: str = field(default="test", metadata={"help": "the split to evaluate", "aliases": ["--split"]})
    long_tail_classes: list[str] = field(
        default_factory=list, metadata={"help": "derive head/tail groups: classes kept rare in the training split"}
    )
    long_tail_fraction: float = field(default=0.05, metadata={"help": "share of each tail class's training examples kept"})
    seed: int = field(default=0, metadata={"help": "seed of the long-tail subsampling"})
    max_length: int | None = field(
        default=None,
        metadata={"help": "text: truncate to this many tokens (default: the smaller of the tokenizer's "
                          "model_max_length and the model's max_position_embeddings); batches are padded "
                          "dynamically"},
    )

    def __post_init__(self) -> None:
        self.group_columns = split_commas(self.group_columns)
        self.long_tail_classes = split_commas(self.long_tail_classes)
        self.source_options = _parse_source_options(self.source_options)
        defaults = source_columns(self.source) if isinstance(self.source, str) else source_columns("")
        explicit_image, explicit_text = self.image_column != AUTO, self.text_column != AUTO
        if explicit_image != explicit_text:  # one named: the other is not the source's guess
            if not explicit_image:
                self.image_column = None
            else:
                self.text_column = None
        for name in _COLUMN_FIELDS:
            if getattr(self, name) == AUTO:
                setattr(self, name, defaults[name])
        if not self.group_columns:
            self.group_columns = list(defaults["group_columns"])


def _parse_source_options(value: Any) -> dict:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as err:
            raise FairQuantError(f"data.source_options must be a JSON object, got {value!r} ({err})") from err
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise FairQuantError(f"data.source_options must be a mapping of option names to values, got {value!r}")
    return dict(value)


def check_subset(config: DataConfig) -> None:
    """A ``subset`` (a Hub dataset's configuration) on an offline source is an error, and so is a
    ``source_options`` key the offline source's loader does not take (or ``name`` beside ``subset``)."""
    if config.subset and config.source in OFFLINE_SOURCES:
        raise FairQuantError(f"data.subset applies to Hub datasets; the offline source {config.source!r} has none")
    if config.subset and "name" in (config.source_options or {}):
        raise FairQuantError("give the Hub configuration once: data.subset or data.source_options.name, not both")
    check_source_options(config.source, config.source_options or {})


def _load_kwargs(config: DataConfig) -> dict[str, Any]:
    return {**(config.source_options or {}), **({"name": config.subset} if config.subset else {})}


def load_grouped_dataset(
    config: DataConfig, image_processor: Any = None, tokenizer: Any = None, model_config: Any = None
) -> tuple[DatasetDict, GroupSpec]:
    """Load, derive groups, validate, then preprocess: → (model-ready splits, fitted GroupSpec).

    Everything that can be wrong with columns or groups is checked before preprocessing. A group
    present only in the evaluation split is kept (audit and explain report it as eval-only) and
    logged; training on it is what :meth:`GroupSpec.check_covered` refuses. Text is truncated to
    ``config.max_length`` (None: :func:`text_length_limit` of ``tokenizer`` and ``model_config``)
    and not padded (the input layer pads each batch).
    """
    raw, spec = load_raw_grouped_dataset(config)
    prepared, _ = preprocess_grouped_dataset(
        raw, config, image_processor=image_processor, tokenizer=tokenizer, model_config=model_config
    )
    return prepared, spec


def load_raw_grouped_dataset(config: DataConfig) -> tuple[DatasetDict, GroupSpec]:
    """The first half of :func:`load_grouped_dataset`: the train/eval splits as loaded (groups
    derived and validated, nothing preprocessed) and the fitted GroupSpec — e.g. to train a
    tokenizer on the raw training text before tokenising."""
    check_subset(config)
    raw = load_source(config.source, **_load_kwargs(config))
    for split in (config.train_split, config.eval_split):
        if split not in raw:
            raise FairQuantError(f"split '{split}' not found in dataset {config.source!r}; splits: {list(raw)}")
    if config.long_tail_classes:
        raw = make_long_tailed(
            raw, config.long_tail_classes, config.long_tail_fraction, config.seed,
            label_column=config.label_column, train_split=config.train_split,
        )
    raw = DatasetDict({s: raw[s] for s in (config.train_split, config.eval_split)})
    spec = GroupSpec(config.group_columns)
    for split, ds in raw.items():
        if config.label_column is None:  # no labels (a causal LM's targets are its tokens): groups only
            if len(ds) == 0:
                raise FairQuantError(f"split '{split}' is empty: it needs at least one example")
            spec.check_columns(ds, split=split)
        else:  # class names are mapped through the model's label2id once the model is known
            spec.validate(ds, label_column=config.label_column, split=split, names_later=True)
    spec = spec.fit(*raw.values())
    eval_only = spec.eval_only_groups(raw[config.train_split], {config.eval_split: raw[config.eval_split]})
    if eval_only:
        logger.warning(
            "group(s) %s occur only in split '%s' (no training example): audited and explained as eval-only groups",
            eval_only, config.eval_split,
        )
    return raw, spec


def preprocess_grouped_dataset(
    raw: DatasetDict, config: DataConfig, image_processor: Any = None, tokenizer: Any = None, model_config: Any = None
) -> tuple[DatasetDict, Any]:
    """The second half of :func:`load_grouped_dataset`: tokenise or transform into model inputs.
    Returns the splits and the processor that made them (the tokenizer, the image processor, or
    the fitted default image transform as a processor): what to publish beside the model."""
    if config.text_column:
        if tokenizer is None:
            raise FairQuantError(f"text column '{config.text_column}' needs a tokenizer")
        max_length = config.max_length if config.max_length is not None else text_length_limit(tokenizer, model_config)
        return prepare_text_dataset(raw, tokenizer, config.text_column, config.label_column, max_length), tokenizer
    if config.image_column:
        return prepare_image_dataset(
            raw, config.image_column, config.label_column, image_processor, train_split=config.train_split
        )
    raise FairQuantError("DataConfig needs an image_column or a text_column")
