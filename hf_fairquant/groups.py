"""Which examples belong to which group — and every group-related check.

A :class:`GroupSpec` names the column (or columns, for intersectional groups such as
``sex×race``) that define groups, learns their values from data (:meth:`GroupSpec.fit`),
and maps readable names ↔ stable integer codes. It also counts groups per split and
derives per-group loss weights. All validation of group and label columns lives here, so
that every entry point fails the same way, early, with a message that names the column.
"""

from __future__ import annotations

import math
import numbers
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from .errors import FairQuantError

#: Separator of intersectional group names, e.g. ``"female×black"``.
INTERSECTION_SEPARATOR = "×"

WeightScheme = Union[str, Mapping[Any, float]]
WEIGHT_SCHEMES = ("inverse_frequency", "sqrt_inverse_frequency")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _sort_key(value: Any) -> tuple:
    # numbers (ints, floats, bools) sort numerically before strings; strings sort alphabetically
    return (0, value, "") if isinstance(value, numbers.Real) else (1, 0, str(value))


def _kind(value: Any) -> str:
    """``"number"`` or ``"string"`` (or the type's name): group values of one column must share it."""
    if isinstance(value, numbers.Real):
        return "number"
    return "string" if isinstance(value, str) else type(value).__name__


def _typed(value: tuple) -> str:
    """A group value with its type, for messages where two values print alike (``1`` vs ``'1'``)."""
    parts = [f"{v!r} ({type(v).__name__})" for v in value]
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"


def _column_values(dataset: Any, column: str) -> list:
    """Materialise one column as a plain list of Python values (datasets 5 returns a lazy
    Column; a torch-formatted dataset would give tensors)."""
    if hasattr(dataset, "with_format"):
        dataset = dataset.with_format(None)
    values = dataset[column]
    return values if isinstance(values, list) else list(values[:])


def check_one_split(dataset: Any, where: str = "dataset") -> None:
    """A ``DatasetDict`` where one split is expected is an error naming its splits."""
    if _is_dataset_dict(dataset) and not hasattr(dataset, "features"):
        splits = list(dataset.keys())
        first = repr(splits[0]) if splits else "'test'"
        raise FairQuantError(
            f"{where} must be one split (a datasets.Dataset), got a {type(dataset).__name__} with splits {splits}: "
            f"pass one of them, e.g. ds[{first}]"
        )


def column_names(dataset: Any) -> list[str]:
    check_one_split(dataset)
    names = getattr(dataset, "column_names", None)
    if names is None:
        raise FairQuantError(f"expected a datasets.Dataset with named columns, got {type(dataset).__name__}")
    return list(names)


#: Label column names, in the order they are looked for (``datasets`` and HF examples use
#: ``label``; Trainer's collators rename it ``labels``).
LABEL_COLUMNS = ("labels", "label")


def example_columns(dataset: Any) -> list[str]:
    """Columns of the first example as the dataset serves it (after ``with_transform``)."""
    if len(dataset) == 0:
        return []
    first = dataset[:1]
    return list(first) if isinstance(first, Mapping) else []


def resolve_label_column(dataset: Any, label_column: str | None = None, where: str = "dataset") -> str:
    """``label_column``, else ``labels`` or ``label``: in the stored columns, else in the first
    transformed example (a ``with_transform`` that computes the labels)."""
    stored = column_names(dataset)
    candidates = (label_column,) if label_column else LABEL_COLUMNS
    for name in candidates:
        if name in stored:
            return name
    served = example_columns(dataset)
    for name in candidates:
        if name in served:
            return name
    wanted = f"'{label_column}'" if label_column else "'labels' or 'label'"
    extra = f"; after the dataset's transform: {served}" if served and served != stored else ""
    raise FairQuantError(f"label column {wanted} not found in {where}; available columns: {stored}{extra}")


def label_values(dataset: Any, column: str, chunk: int = 1024) -> list:
    """Every value of the label column: the stored column when it exists, else read through the
    dataset's transform (``dataset[i:j]``)."""
    if column in column_names(dataset):
        return _column_values(dataset, column)
    values: list = []
    for start in range(0, len(dataset), chunk):
        part = dataset[start : start + chunk][column]
        values += part.tolist() if hasattr(part, "tolist") else list(part)
    return values


def label_codes(values: Sequence[Any], column: str = "labels", where: str = "dataset",
                label2id: Mapping[str, int] | None = None) -> np.ndarray:
    """Class labels as int64 codes, or a FairQuantError naming the column and what is allowed.

    Ints pass; bools become 0/1; floats must be integral (``1.0`` → 1: pandas turns int columns
    with gaps into floats) and are cast; strings are class names mapped through ``label2id``
    (the model's ``config.label2id``); anything else, or a missing value, is refused.
    """
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    missing = next((i for i, v in enumerate(values) if _is_missing(v)), None)
    if missing is not None:
        raise FairQuantError(f"label column '{column}' of {where} has missing values, first at row {missing}")
    if any(isinstance(v, str) for v in values):
        names = {str(k): int(v) for k, v in (label2id or {}).items()}
        unknown = sorted({str(v) for v in values if not isinstance(v, str) or v not in names})
        if unknown:
            allowed = sorted(names, key=names.get) if names else "none (the model has no config.label2id)"
            raise FairQuantError(
                f"label column '{column}' of {where} holds class names {unknown[:5]} that are not in the "
                f"model's config.label2id; allowed names: {allowed} (or integer class ids)"
            )
        return np.asarray([names[v] for v in values], dtype=np.int64)
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if isinstance(v, (bool, int)):
            out[i] = int(v)
        elif isinstance(v, float) and float(v).is_integer():
            out[i] = int(v)
        else:
            raise FairQuantError(
                f"label column '{column}' of {where} has the value {v!r} at row {i}; labels must be integer "
                "class ids (integral floats such as 1.0 and bools are cast) or class names from config.label2id"
            )
    return out


_GENERIC_LABEL = re.compile(r"^(label_)?(\d+)$")


def _meaningful_names(names: Mapping[int, str]) -> bool:
    """False for placeholder names (transformers' ``LABEL_0``…, ``ClassLabel(num_classes=n)``'s
    ``"0"``…): they say nothing about what a class is, so there is nothing to compare."""
    return not all((m := _GENERIC_LABEL.match(str(n).strip().lower())) and int(m.group(2)) == i for i, n in names.items())


def check_label_names(feature: Any, id2label: Mapping[Any, str] | None, where: str = "dataset",
                      column: str = "labels") -> None:
    """The dataset's ``ClassLabel`` names mean what the model's ``id2label`` says each id is.

    A dataset whose class names are permuted relative to the model, or are other classes, would
    be scored against the wrong classes without a word. Names are compared case-insensitively
    (as ``Dataset.align_labels_with_mapping`` does); placeholder names on either side
    (``LABEL_0``, ``"0"``) are not compared. A permutation names the id mapping that fixes it."""
    names = getattr(feature, "names", None)
    if not names or not id2label or not isinstance(names, (list, tuple)):
        return
    try:
        model = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        return  # not an id → name mapping: nothing to compare
    data = dict(enumerate(str(n) for n in names))
    if not (_meaningful_names(model) and _meaningful_names(data)):
        return
    model_id = {n.strip().lower(): i for i, n in model.items()}
    other = [n for n in data.values() if n.strip().lower() not in model_id]
    if other:
        raise FairQuantError(
            f"label column '{column}' of {where} holds the classes {list(data.values())} (its ClassLabel names), "
            f"but the model's config.id2label has {[model[i] for i in sorted(model)]}; {other[:5]} are not among "
            "the model's classes: use a model trained on these classes, or a dataset of the model's"
        )
    moved = {i: model_id[n.strip().lower()] for i, n in data.items() if model_id[n.strip().lower()] != i}
    if moved:
        raise FairQuantError(
            f"label column '{column}' of {where} numbers its classes differently from the model: dataset id → "
            f"model id {moved} (dataset {data}, model config.id2label {model}); align them first with "
            f"ds = ds.align_labels_with_mapping(model.config.label2id, {column!r})"
        )


def _holds_names(values: Sequence[Any]) -> bool:
    """Every value a class name (a string); missing values are left to :func:`label_codes` to name."""
    return bool(values) and all(isinstance(v, str) for v in values)


def check_labels(
    dataset: Any,
    where: str = "dataset",
    num_labels: int | None = None,
    label2id: Mapping[str, int] | None = None,
    label_column: str | None = None,
    id2label: Mapping[int, str] | None = None,
) -> np.ndarray:
    """Every row's class label as an int64 code (see :func:`label_codes`), within the model's
    classes ``0..num_labels-1`` when ``num_labels`` is known, its ``ClassLabel`` names meaning the
    model's classes (:func:`check_label_names`; ``id2label`` defaults to the inverse of
    ``label2id``); else a FairQuantError naming the column."""
    column = label_column or resolve_label_column(dataset, None, where)
    if id2label is None and isinstance(label2id, Mapping):
        id2label = {i: n for n, i in label2id.items() if isinstance(i, (int, np.integer))}
    check_label_names((getattr(dataset, "features", None) or {}).get(column), id2label, where, column)
    labels = label_codes(label_values(dataset, column), column, where, label2id)
    if num_labels is not None:
        bad = sorted(set(labels[(labels < 0) | (labels >= num_labels)].tolist()))
        if bad:
            raise FairQuantError(
                f"labels {bad[:10]} in column '{column}' of {where} are outside the model's "
                f"classes 0..{num_labels - 1}"
            )
    return labels


@dataclass(frozen=True)
class GroupSpec:
    """The column(s) that define groups, and the group values once fitted.

    >>> spec = GroupSpec(["sex", "race"]).fit(dataset)      # doctest: +SKIP
    >>> spec.names                                          # doctest: +SKIP
    ['female×black', 'female×white', 'male×black', 'male×white']

    ``values`` holds one tuple per group (one entry per column), in code order; codes are
    stable: sorted by value (ints numerically, then strings), whatever the row order.
    """

    columns: tuple[str, ...] = ("group",)
    values: tuple[tuple, ...] | None = field(default=None, compare=True)

    def __init__(self, columns: str | Sequence[str] = "group", values: Iterable | None = None):
        if not isinstance(columns, (str, list, tuple)):
            raise FairQuantError(
                f"GroupSpec needs a group column name or a list of names, got {type(columns).__name__} {columns!r}"
            )
        cols = (columns,) if isinstance(columns, str) else tuple(columns)
        if not cols or not all(isinstance(c, str) and c for c in cols):
            raise FairQuantError(f"GroupSpec needs one or more column names, got {columns!r}")
        twice = sorted({c for c in cols if cols.count(c) > 1})
        if twice:
            raise FairQuantError(
                f"GroupSpec columns {list(cols)} name {twice} more than once: an intersection needs distinct "
                f"columns (groups would be named like {twice[0] + INTERSECTION_SEPARATOR + twice[0]!r})"
            )
        object.__setattr__(self, "columns", cols)
        if values is not None:
            vals = tuple(tuple(v) if isinstance(v, (tuple, list)) else (v,) for v in values)
            bad = [v for v in vals if len(v) != len(cols)]
            if bad:
                raise FairQuantError(f"group values {bad[:3]} do not have one entry per column {list(cols)}")
            self._check_hashable(vals)
            if len(set(vals)) != len(vals):
                raise FairQuantError(f"group values must be unique, got {list(vals)}")
            object.__setattr__(self, "values", vals)
        else:
            object.__setattr__(self, "values", None)

    # ---------------------------------------------------------------- naming
    @property
    def name(self) -> str:
        """Readable name of the grouping, e.g. ``"sex×race"``."""
        return INTERSECTION_SEPARATOR.join(self.columns)

    @property
    def is_fitted(self) -> bool:
        return self.values is not None

    @property
    def names(self) -> list[str]:
        """Readable group names in code order (``"a×b"`` for intersections)."""
        return [self._value_name(v) for v in self._fitted_values()]

    @property
    def num_groups(self) -> int:
        return len(self._fitted_values())

    @staticmethod
    def _value_name(value: tuple) -> str:
        return INTERSECTION_SEPARATOR.join(str(v) for v in value)

    def _fitted_values(self) -> tuple[tuple, ...]:
        if self.values is None:
            raise FairQuantError(f"GroupSpec({list(self.columns)}) is not fitted: call .fit(dataset) first")
        return self.values

    # ---------------------------------------------------------------- fitting
    def fit(self, *datasets: Any) -> "GroupSpec":
        """Return a spec whose values are the sorted union of the groups in ``datasets``."""
        if not datasets:
            raise FairQuantError("GroupSpec.fit needs at least one dataset")
        seen: set[tuple] = set()
        first: dict[tuple[int, str], tuple[int, Any]] = {}  # (column, kind) → (dataset, value) first seen
        for index, ds in enumerate(datasets):
            rows = set(self._row_values(ds))
            for row in sorted(rows, key=repr):  # the first value of each kind, reproducibly
                for col, value in enumerate(row):
                    first.setdefault((col, _kind(value)), (index, value))
            seen.update(rows)
        self._check_one_kind(first, len(datasets))
        ordered = sorted(seen, key=lambda v: tuple(_sort_key(x) for x in v))
        return replace(self, values=ordered)

    def _check_one_kind(self, first: Mapping[tuple[int, str], tuple[int, Any]], n_datasets: int) -> None:
        """Numbers and strings in one group column are refused, not unified: ``1`` and ``'1'``
        would be two groups both named "1", and guessing that they are one group would hide a
        split prepared differently from the others (e.g. read from CSV as text). Cast the
        column to one type (``ds.cast_column(col, Value("string"))``) and fit again."""
        for col, name in enumerate(self.columns):
            kinds = {kind: found for (c, kind), found in first.items() if c == col}
            if len(kinds) > 1:
                where = lambda i: f" (in dataset {i + 1} of {n_datasets})" if n_datasets > 1 else ""  # noqa: E731
                shown = ", ".join(f"{kind}s, e.g. {v!r}{where(i)}" for kind, (i, v) in sorted(kinds.items()))
                raise FairQuantError(
                    f"group column '{name}' holds values of different types: {shown}; a number and a string "
                    f"that print alike would be two groups with one name. Cast the column to one type in every "
                    f"split, e.g. ds = ds.cast_column({name!r}, datasets.Value('string'))"
                )

    def _row_values(self, dataset: Any, split: str | None = None) -> list[tuple]:
        self.check_columns(dataset, split=split)
        columns = [_column_values(dataset, c) for c in self.columns]
        for col, vals in zip(self.columns, columns):
            missing = [i for i, v in enumerate(vals) if _is_missing(v)]
            if missing:
                where = f" of split '{split}'" if split else ""
                raise FairQuantError(
                    f"group column '{col}'{where} has {len(missing)} missing (None/NaN) value(s), "
                    f"first at row {missing[0]}; every example needs a group: drop or fill them"
                )
        rows = [tuple(v.item() if isinstance(v, np.generic) else v for v in row) for row in zip(*columns)]
        self._check_hashable(rows, split)
        if len(self.columns) > 1:
            clash = next((v for row in rows for v in row if INTERSECTION_SEPARATOR in str(v)), None)
            if clash is not None:
                raise FairQuantError(
                    f"group value {clash!r} contains {INTERSECTION_SEPARATOR!r}, the separator of "
                    f"intersection names; rename it to group by {list(self.columns)}"
                )
        return rows

    def _check_hashable(self, rows: Sequence[tuple], split: str | None = None) -> None:
        """Group values are scalars (strings, numbers, bools); a list or dict cell names no group."""
        for i, row in enumerate(rows):
            for col, value in zip(self.columns, row):
                try:
                    hash(value)
                except TypeError:
                    where = f" of split '{split}'" if split else ""
                    raise FairQuantError(
                        f"group column '{col}'{where} holds {type(value).__name__} values (row {i}: {value!r}); a group "
                        "value must be a string, a number or a bool: map the column to one such value per example"
                    ) from None

    # ---------------------------------------------------------------- encoding
    def encode(self, dataset_or_rows: Any) -> np.ndarray:
        """Integer group codes for a dataset (or a list of values / tuples)."""
        values = self._fitted_values()
        index = {v: i for i, v in enumerate(values)}
        if hasattr(dataset_or_rows, "column_names"):
            rows = self._row_values(dataset_or_rows)
        else:
            rows = [tuple(r) if isinstance(r, (tuple, list)) else (r,) for r in dataset_or_rows]
            bad = next((r for r in rows if len(r) != len(self.columns)), None)
            if bad is not None:
                raise FairQuantError(
                    f"group value {bad!r} has {len(bad)} entries; GroupSpec({list(self.columns)}) needs one per column"
                )
            self._check_hashable(rows)
        try:
            return np.fromiter((index[r] for r in rows), dtype=np.int64, count=len(rows))
        except KeyError as err:
            raise FairQuantError(self._unknown_message(sorted({r for r in rows if r not in index}, key=str))) from err

    def _unknown_message(self, unknown: list[tuple]) -> str:
        """Unknown group values; where one prints like a fitted group (``'1'`` vs ``1``), with types."""
        names = [self._value_name(u) for u in unknown]
        fitted = self._fitted_values()
        if set(names) & set(self.names):  # same text, other value: a list of names would contradict itself
            alike = [f for f in fitted if self._value_name(f) in names]
            return (
                f"group value(s) {', '.join(_typed(u) for u in unknown[:5])} of column(s) {list(self.columns)} are not "
                f"among the fitted groups: they print like {', '.join(_typed(f) for f in alike[:5])} but are of another type; "
                "give every split the same column type (e.g. ds.cast_column(column, datasets.Value('string')))"
            )
        return (
            f"group value(s) {names[:5]} of column(s) {list(self.columns)} are not among the fitted groups {self.names}"
        )

    def decode(self, codes: Iterable[int]) -> list[str]:
        """Readable names for integer codes."""
        names = self.names
        out = []
        for c in codes:
            if not 0 <= int(c) < len(names):
                raise FairQuantError(f"group code {c} is outside 0..{len(names) - 1} ({names})")
            out.append(names[int(c)])
        return out

    def code_of(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise FairQuantError(f"unknown group {name!r}; the groups are {self.names}") from None

    def group_names(self, dataset: Any) -> list[str]:
        """The readable group name of every row of ``dataset``."""
        return self.decode(self.encode(dataset))

    # ---------------------------------------------------------------- counting
    def counts(self, dataset: Any) -> dict[str, Any]:
        """Examples per group; for a ``DatasetDict``, ``{split: {group: count}}``.

        Every fitted group appears, with 0 where a split has none of it.
        """
        if _is_dataset_dict(dataset):
            return {split: self.counts(ds) for split, ds in dataset.items()}
        counter = Counter(self.encode(dataset).tolist())
        return {name: counter.get(i, 0) for i, name in enumerate(self.names)}

    def weights(self, dataset: Any, scheme: WeightScheme = "inverse_frequency") -> dict[str, float]:
        """Per-group loss weights, normalised so the mean weight over examples is 1.

        ``inverse_frequency``: w_g ∝ 1/n_g; ``sqrt_inverse_frequency``: w_g ∝ 1/√n_g; a
        mapping ``{group: weight}`` (keys are names or raw values) is taken as given.
        """
        counts = self.counts(dataset)
        if isinstance(scheme, Mapping):
            by_name = {self._value_name(k if isinstance(k, tuple) else (k,)): float(w) for k, w in scheme.items()}
            unknown = sorted(set(by_name) - set(self.names))
            missing = [n for n in self.names if n not in by_name]
            if unknown or missing:
                raise FairQuantError(
                    f"group weight mapping must name every group exactly: unknown {unknown}, "
                    f"missing {missing}; the groups are {self.names}"
                )
            bad = {k: w for k, w in by_name.items() if not (w >= 0 and math.isfinite(w))}
            if bad:
                raise FairQuantError(f"group weights must be finite and >= 0, got {bad}")
            if not any(by_name[n] > 0 and counts[n] > 0 for n in self.names):
                raise FairQuantError(
                    f"group weights {by_name} give every example weight 0 (groups with examples: "
                    f"{[n for n in self.names if counts[n] > 0]}): at least one of them needs a weight > 0"
                )
            return {n: by_name[n] for n in self.names}
        if scheme not in WEIGHT_SCHEMES:
            raise FairQuantError(f"unknown group weighting {scheme!r}; allowed: {list(WEIGHT_SCHEMES)} or a mapping")
        empty = [n for n, c in counts.items() if c == 0]
        if empty:
            raise FairQuantError(f"cannot weight by frequency: group(s) {empty} have no examples in this dataset")
        power = 1.0 if scheme == "inverse_frequency" else 0.5
        raw = {n: c ** -power for n, c in counts.items()}
        total = sum(counts.values())
        scale = total / sum(raw[n] * counts[n] for n in counts)
        return {n: raw[n] * scale for n in self.names}

    # ---------------------------------------------------------------- validation
    def check_columns(self, dataset: Any, split: str | None = None) -> None:
        available = column_names(dataset)
        missing = [c for c in self.columns if c not in available]
        if missing:
            where = f" in split '{split}'" if split else ""
            raise FairQuantError(f"group column(s) {missing} not found{where}; available columns: {available}")

    def validate(
        self,
        dataset: Any,
        label_column: str | None = None,
        num_labels: int | None = None,
        split: str | None = None,
        label2id: Mapping[str, int] | None = None,
        id2label: Mapping[int, str] | None = None,
        names_later: bool = False,
    ) -> np.ndarray | None:
        """Check a split before heavy work: non-empty, label and group columns present,
        no missing values, labels within ``0..num_labels-1``, groups among the fitted ones,
        ``ClassLabel`` names that mean the model's classes (:func:`check_label_names`; ``id2label``
        defaults to the inverse of ``label2id``).

        ``label_column`` None finds ``labels`` or ``label`` (see :func:`resolve_label_column`).
        Returns the labels as int64 codes (see :func:`label_codes`: integral floats and bools are
        cast, class-name strings mapped through ``label2id``). ``names_later``: a column of class
        names (strings, no missing value) is accepted as it is and None returned — before a model
        exists there is no ``label2id`` to check them against; the model's checks do that."""
        where = f"split '{split}'" if split else "dataset"
        check_one_split(dataset, where)
        if len(dataset) == 0:
            raise FairQuantError(f"{where} is empty: it needs at least one example")
        column = resolve_label_column(dataset, label_column, where)
        self.check_groups(dataset, split)
        if names_later and _holds_names(label_values(dataset, column)):  # no model yet to map names to ids
            return None
        return check_labels(dataset, where, num_labels, label2id, column, id2label)

    def check_groups(self, dataset: Any, split: str | None = None) -> None:
        """The group columns are present and complete (and, once fitted, hold only fitted groups)."""
        self._row_values(dataset, split=split)
        if self.is_fitted:
            self.encode(dataset)

    def eval_only_groups(self, train: Any, others: Mapping[str, Any]) -> list[str]:
        """Groups present in ``others`` (e.g. the test split) with no example in ``train``."""
        train_counts = self.counts(train)
        found: list[str] = []
        for ds in others.values():
            found += [n for n, c in self.counts(ds).items() if c > 0 and train_counts.get(n, 0) == 0 and n not in found]
        return found

    def check_covered(self, train: Any, others: Mapping[str, Any]) -> None:
        """Every group seen in ``others`` must have training examples (what training needs;
        audit and explain accept eval-only groups and report them, see :meth:`eval_only_groups`)."""
        train_counts = self.counts(train)
        for split, ds in others.items():
            present = [n for n, c in self.counts(ds).items() if c > 0]
            uncovered = [n for n in present if train_counts.get(n, 0) == 0]
            if uncovered:
                raise FairQuantError(
                    f"group(s) {uncovered} of column(s) {list(self.columns)} occur in split '{split}' "
                    f"but have no training examples; training weights and samples groups from the "
                    f"training data, so every group it evaluates needs some (audit and explain accept them)"
                )

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "values": None if self.values is None else [list(v) for v in self.values]}

    @classmethod
    def from_dict(cls, data: Mapping) -> "GroupSpec":
        """The spec :meth:`to_dict` wrote: ``{"columns": [...], "values": [[...], ...] | None}``."""
        if not isinstance(data, Mapping) or "columns" not in data:
            got = sorted(data) if isinstance(data, Mapping) else f"{type(data).__name__} {data!r}"
            raise FairQuantError(f"GroupSpec.from_dict needs a mapping with 'columns' (and optionally 'values'), got {got}")
        unknown = sorted(set(data) - {"columns", "values"})
        if unknown:
            raise FairQuantError(f"GroupSpec.from_dict: unknown key(s) {unknown}; allowed: columns, values")
        return cls(data["columns"], data.get("values"))


def as_group_spec(value: Any, where: str = "group_spec") -> "GroupSpec":
    """A :class:`GroupSpec` from a spec, a column name or a list/tuple of column names (an
    intersection); anything else is an error that says what is accepted."""
    if isinstance(value, GroupSpec):
        return value
    if isinstance(value, str) or (isinstance(value, (list, tuple)) and value and all(isinstance(c, str) for c in value)):
        return GroupSpec(value)
    raise FairQuantError(
        f"{where} must be a GroupSpec, a group column name or a list of column names, got "
        f"{type(value).__name__} {value!r}"
    )


def check_enough_for_groups(size: int, num_groups: int, option: str, names: Sequence[str] = ()) -> None:
    """A group-stratified sample of ``size`` rows must be able to hold every group."""
    if size < num_groups:
        shown = f" ({', '.join(map(str, names))})" if names else ""
        raise FairQuantError(
            f"{option}={size} is smaller than the number of groups, {num_groups}{shown}: the stratified "
            f"sample would leave some group out; use {option} >= {num_groups}"
        )


def _is_dataset_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) or type(obj).__name__ in {"DatasetDict", "IterableDatasetDict"}


def stratified_indices(codes: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Row indices of a group-stratified sample of ``size`` rows (sorted).

    Each group gets an equal share, capped at its size; what a small group cannot fill goes
    to the others, so minorities are represented however rare they are (calibration data
    drawn this way sees them). ``size >= len(codes)`` returns every row.
    """
    if size <= 0:
        raise FairQuantError(f"sample size must be positive, got {size}")
    codes = np.asarray(codes)
    if size >= len(codes):
        return np.arange(len(codes))
    rng = np.random.default_rng(seed)
    groups = np.unique(codes)
    pools = {g: rng.permutation(np.flatnonzero(codes == g)) for g in groups}
    quota = dict.fromkeys(groups, 0)
    remaining = size
    open_groups = list(groups)
    while remaining > 0 and open_groups:
        share = max(1, remaining // len(open_groups))
        for g in list(open_groups):
            take = min(share, len(pools[g]) - quota[g], remaining)
            quota[g] += take
            remaining -= take
            if quota[g] == len(pools[g]):
                open_groups.remove(g)
            if remaining == 0:
                break
    return np.sort(np.concatenate([pools[g][: quota[g]] for g in groups]))
