"""Small shared formatting: percentages, intervals, Markdown tables, plain-JSON conversion."""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePath
from typing import Any, Sequence

from .errors import ArtifactError, FairQuantError, MissingFileError


def pct(value: float | None, ci: Sequence[float] | None = None) -> str:
    """A fraction as a percentage with one decimal (``0.873`` → ``"87.3"``), plus ``[lo, hi]``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{100 * value:.1f}"
    return text + (f" {ci_text(ci)}" if ci is not None else "")


def signed_pct(value: float | None) -> str:
    """Percentage points with a sign; a rounded −0.0 prints as +0.0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{round(100 * value, 1) + 0.0:+.1f}"


def num(value: float | None, ci: Sequence[float] | None = None) -> str:
    """A positive quantity such as a perplexity with three significant digits at most two
    decimals (``12.345`` → ``"12.35"``, ``123.4`` → ``"123.4"``, ``1234.5`` → ``"1234"``), plus ``[lo, hi]``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    text = _num(value)
    return text + (f" [{_num(ci[0])}, {_num(ci[1])}]" if ci is not None else "")


def _num(value: float) -> str:
    digits = 2 if abs(value) < 100 else 1 if abs(value) < 1000 else 0
    return f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 3, ci: Sequence[float] | None = None) -> str:
    """A signed difference (``0.0123`` → ``"+0.012"``; a rounded −0 prints as +0.000), plus ``[lo, hi]``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{round(value, digits) + 0.0:+.{digits}f}"
    return text + (f" [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if ci is not None else "")


def ci_text(interval: Sequence[float] | None, missing: str = "not bootstrapped") -> str:
    """``[lo, hi]`` in percent, or ``missing``; a text in place of an interval (why there is none)
    is shown in brackets."""
    if isinstance(interval, str):
        return f"[{interval}]"
    return f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else missing


def escape_cell(value: Any) -> str:
    """Text safe inside a Markdown table cell (a ``|`` in a group name would split the row)."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(head: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; every cell escaped."""
    lines = ["| " + " | ".join(escape_cell(c) for c in head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(escape_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_plain(obj: Any) -> Any:
    """JSON types only: dicts with str keys, lists, finite floats (NaN/inf → None), ints, str, bool,
    None; numpy/torch scalars and arrays become Python values, paths strings."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch arrays and scalars
        return to_plain(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return to_plain(obj.item())
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_plain(obj.to_dict())
    return str(obj)


class JsonRoundTrip:
    """``from_json(text)`` and ``load(path)`` for a class with ``from_dict`` — the
    ``RepoCard(content)`` / ``RepoCard.load(path)`` split: a string is never guessed to be a path."""

    #: the file :meth:`load` reads when given a folder (None: folders are not accepted)
    json_file_name: str | None = None

    @classmethod
    def from_json(cls, text: str) -> Any:
        """From JSON text (what ``to_json`` returns); a file or folder: :meth:`load`."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as err:
            raise FairQuantError(
                f"{cls.__name__}.from_json takes JSON text ({err}); to read a file use {cls.__name__}.load(path)"
            ) from None
        try:
            return cls.from_dict(data)
        except KeyError as err:
            raise FairQuantError(f"the JSON text lacks the field {err.args[0]!r} ({cls.__name__} needs it)") from None
        except (TypeError, AttributeError) as err:
            raise FairQuantError(f"the JSON text does not hold {cls.__name__} data ({err})") from None

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """From a JSON file (or the folder holding :attr:`json_file_name`)."""
        path = Path(path)
        file = path / cls.json_file_name if cls.json_file_name and path.is_dir() else path
        if not file.is_file():
            raise MissingFileError(f"no {cls.__name__} JSON at {path}: give the file (or folder) its save() wrote")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ArtifactError(f"{file} is not valid JSON ({err}): not a file {cls.__name__}.save wrote, or damaged") from None
        try:
            return cls.from_loaded(data)
        except KeyError as err:  # the field that is missing, and the file it is missing from
            raise ArtifactError(f"{file} lacks the field {err.args[0]!r} ({cls.__name__} needs it)") from None
        except (TypeError, AttributeError) as err:
            raise ArtifactError(f"{file} does not hold {cls.__name__} data ({err})") from None

    @classmethod
    def from_loaded(cls, data: Any) -> Any:
        """The object from a loaded file's data (subclasses may accept wider files)."""
        return cls.from_dict(data)
