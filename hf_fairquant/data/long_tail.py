"""Derive head/tail groups from classes: a long-tailed training split, a balanced test split.

This is how the offline demos get a minority group from a dataset that has no demographic
column: the chosen *tail* classes keep only ``fraction`` of their training examples. The
groups are derived, not demographic — docs and cards say so.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from datasets import ClassLabel, DatasetDict

from ..errors import FairQuantError

HEAD, TAIL = "head", "tail"


def _class_ids(classes: Sequence[int | str], feature: object, label_column: str) -> list[int]:
    names = feature.names if isinstance(feature, ClassLabel) else None
    ids = []
    for c in classes:
        if isinstance(c, str) and names is not None:
            if c not in names:
                raise FairQuantError(f"tail class {c!r} is not a class of column '{label_column}'; classes: {names}")
            ids.append(names.index(c))
        elif isinstance(c, (int, np.integer)) and (names is None or 0 <= c < len(names)):
            ids.append(int(c))
        else:
            allowed = names if names is not None else "integer labels"
            raise FairQuantError(f"tail class {c!r} is not valid for column '{label_column}'; allowed: {allowed}")
    return ids


def make_long_tailed(
    dataset: DatasetDict,
    tail_classes: Sequence[int | str],
    fraction: float = 0.05,
    seed: int = 0,
    label_column: str = "label",
    group_column: str = "group",
    train_split: str = "train",
) -> DatasetDict:
    """Keep ``fraction`` of each tail class in ``train_split`` (at least one example), leave the
    other splits untouched, and add ``group_column`` = ``"head"``/``"tail"`` to every split.

    The class stays in ``label_column``, a second grouping (``GroupSpec(label_column)``).
    The kept examples are a seeded random sample; row order is otherwise preserved.
    """
    if not 0 < fraction <= 1:
        raise FairQuantError(f"fraction must be in (0, 1], got {fraction}")
    if train_split not in dataset:
        raise FairQuantError(f"split '{train_split}' not found; splits: {list(dataset)}")
    if not tail_classes:
        raise FairQuantError("tail_classes is empty: name at least one class to make rare")
    train = dataset[train_split]
    if label_column not in train.column_names:
        raise FairQuantError(f"label column '{label_column}' not found; available columns: {train.column_names}")
    tail_ids = _class_ids(tail_classes, train.features[label_column], label_column)

    labels = np.asarray(train[label_column][:])
    rng = np.random.default_rng(seed)
    keep = np.ones(len(labels), dtype=bool)
    for cid in tail_ids:
        rows = np.flatnonzero(labels == cid)
        n_keep = max(1, int(round(fraction * len(rows)))) if len(rows) else 0
        drop = rng.permutation(rows)[n_keep:]
        keep[drop] = False

    tail_set = set(tail_ids)
    out = {}
    for split, ds in dataset.items():
        if split == train_split:
            ds = ds.select(np.flatnonzero(keep))
        split_labels = ds[label_column][:]
        ds = ds.add_column(group_column, [TAIL if int(y) in tail_set else HEAD for y in split_labels])
        out[split] = ds
    return DatasetDict(out)
