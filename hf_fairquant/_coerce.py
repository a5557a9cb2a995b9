"""YAML values → a dataclass's field types, before the dataclass is built.

PyYAML (YAML 1.1) reads ``5e-4`` and ``1e3`` as strings (a float needs a dot there), and people
quote numbers; ``HfArgumentParser.parse_dict`` passes values through unconverted, so a string
``learning_rate`` reaches torch after all the earlier stages have run. Here every field whose
type is a plain scalar (``int``, ``float``, ``bool``, ``str``, optionally ``None``) or a list of
strings gets the value converted or a :class:`~hf_fairquant.errors.FairQuantError` naming the
section, key, value and the type allowed. Other field types are left to the dataclass.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping

from .errors import FairQuantError

_SCALARS = (bool, int, float, str, type(None))


def _kinds(hint: Any) -> set[type] | None:
    """The scalar types a field accepts, or None when it is not a plain scalar field."""
    if hint in _SCALARS:
        return {hint}
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = set(typing.get_args(hint))
        return args if args <= set(_SCALARS) else None
    return None


def _is_str_list(hint: Any) -> bool:
    if typing.get_origin(hint) is list:
        return typing.get_args(hint) in ((str,),)
    return False


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: no coercion for that class
        return {}


def coerce_fields(section: str, cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with scalar fields of dataclass ``cls`` converted to their declared types."""
    hints = _type_hints(cls)
    out = dict(values)
    for f in dataclasses.fields(cls):
        if f.name not in out or f.name not in hints:
            continue
        hint = hints[f.name]
        kinds = _kinds(hint)
        if kinds is not None:
            out[f.name] = _coerce(f"{section}.{f.name}", out[f.name], kinds)
        elif _is_str_list(hint):
            out[f.name] = _coerce_str_list(f"{section}.{f.name}", out[f.name])
    return out


def _describe(kinds: set[type]) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return " or ".join(names[k] for k in (bool, int, float, str, type(None)) if k in kinds)


def _coerce(key: str, value: Any, kinds: set[type]) -> Any:
    def bad() -> FairQuantError:
        return FairQuantError(f"recipe option {key} must be {_describe(kinds)}, got {value!r} ({type(value).__name__})")

    if value is None:
        if type(None) in kinds:
            return None
        raise bad()
    if isinstance(value, bool):
        if bool in kinds:
            return value
        raise bad()
    if isinstance(value, (int, float)):
        if int in kinds and (isinstance(value, int) or float not in kinds):
            if isinstance(value, float) and not value.is_integer():
                raise bad()
            return int(value)
        if float in kinds:
            if not math.isfinite(float(value)):
                raise bad()
            return float(value)
        if str in kinds:
            return str(value)  # e.g. a subset named 2019
        raise bad()
    if isinstance(value, str):
        text = value.strip()
        if str in kinds:
            if int in kinds or float in kinds:  # int | str (e.g. examples_per_group: 256 or "all")
                try:
                    number = float(text)
                except ValueError:
                    return value
                return _coerce(key, int(number) if int in kinds and number.is_integer() else number, kinds - {str})
            return value
        if bool in kinds and text.lower() in ("true", "false", "yes", "no"):
            return text.lower() in ("true", "yes")
        if int in kinds or float in kinds:
            try:
                number = float(text)
            except ValueError:
                raise bad() from None
            return _coerce(key, number if float in kinds or not number.is_integer() else int(number), kinds)
        raise bad()
    raise bad()  # a list or mapping where a scalar belongs


def _coerce_str_list(key: str, value: Any) -> Any:
    """One string → a one-element list; numbers in the list → strings (``[3, 8]`` class names);
    mappings are kept for the consumer (``audit.recipes: [{preset: w4, overrides: …}]``)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            if isinstance(item, dict):  # e.g. audit.recipes' mapping form: the consumer parses it
                out.append(item)
                continue
            if isinstance(item, bool) or item is None or isinstance(item, list):
                raise FairQuantError(f"recipe option {key} must be a list of strings, got the item {item!r} in {value!r}")
            out.append(str(item) if isinstance(item, (int, float)) else item)
        return out
    raise FairQuantError(f"recipe option {key} must be a list of strings, got {value!r} ({type(value).__name__})")
