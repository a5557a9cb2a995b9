"""QuantRecipe: which bits each Conv2d/Linear/Conv1D gets — a small frozen dataclass, one per workflow.

A recipe has default weight/activation bits, per-module overrides by glob pattern (mixed
precision; the first matching pattern wins) and excluded modules (kept in float). Presets
are strings ``w{2,4,8}`` optionally followed by ``a8``: ``"w8a8"``, ``"w4a8"``, ``"w4"``,
``"w2a8"``, optionally followed by ``@<backend>`` (``"w4a8@torchao"``). :meth:`QuantRecipe.plan`
resolves a recipe against a model, failing early on patterns that match nothing; ``backend``
names the library it compiles to (see :mod:`.backends`; default optimum-quanto).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any, Iterable, Mapping, Union

import torch

from .._config import split_commas
from ..errors import FairQuantError
from .backends import DEFAULT_BACKEND, parse_foreign_recipe, recipe_backends

SUPPORTED_WEIGHT_BITS = (2, 4, 8)
SUPPORTED_ACTIVATION_BITS = (None, 8)
#: The named presets (any ``w{2,4,8}[a8]`` string parses too).
PRESETS = ("w8a8", "w4a8", "w4", "w2a8")
QUANTIZABLE_TYPES = (torch.nn.Conv2d, torch.nn.Linear)
#: Weight group size of the backends that quantize per group (torchao's int4/int2).
DEFAULT_GROUP_SIZE = 32
_PRESET_RE = re.compile(r"^w(\d+)(?:a(\d+))?$")


@dataclass(frozen=True)
class LayerQuant:
    """Bits for one module: weights (2, 4, 8) and activations (None or 8).

    A module read back from a model quantized elsewhere may hold other widths (bitsandbytes
    NF4 = 4, HQQ 3-bit, torch.ao float16 = 16): :meth:`observed` builds such a value, which no
    recipe accepts."""

    weight_bits: int
    activation_bits: int | None = None
    #: read off a model, not asked for: any positive widths
    observed: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def observed_as(cls, weight_bits: float, activation_bits: int | None = None) -> "LayerQuant":
        """What a quantized module holds, whatever library made it (not checked against recipes)."""
        bits = int(weight_bits) if float(weight_bits).is_integer() else float(weight_bits)
        return cls(bits, activation_bits, observed=True)

    def __post_init__(self) -> None:
        if self.observed:
            if not (isinstance(self.weight_bits, (int, float)) and self.weight_bits > 0):
                raise FairQuantError(f"observed weight bits must be positive, got {self.weight_bits!r}")
            return
        if self.weight_bits not in SUPPORTED_WEIGHT_BITS:
            raise FairQuantError(f"unsupported weight bits {self.weight_bits!r}; allowed: {list(SUPPORTED_WEIGHT_BITS)}")
        if self.activation_bits not in SUPPORTED_ACTIVATION_BITS:
            raise FairQuantError(
                f"unsupported activation bits {self.activation_bits!r}; allowed: None (float) or 8"
            )

    def __str__(self) -> str:
        return f"w{self.weight_bits}" + (f"a{self.activation_bits}" if self.activation_bits else "")

    @classmethod
    def parse(cls, value: Union[str, "LayerQuant", Mapping[str, Any]]) -> "LayerQuant":
        if isinstance(value, LayerQuant):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"weight_bits", "activation_bits"}
            if unknown:
                raise FairQuantError(f"unknown key(s) {sorted(unknown)}; allowed: weight_bits, activation_bits")
            if "weight_bits" not in value:
                raise FairQuantError(f"per-module bits {dict(value)} need `weight_bits` (one of {list(SUPPORTED_WEIGHT_BITS)})")
            return cls(value["weight_bits"], value.get("activation_bits"))
        match = _PRESET_RE.match(str(value).strip().lower())
        if not match:
            raise FairQuantError(
                f"unknown quantization preset {value!r}; allowed: {list(PRESETS)} or any "
                f"'w<bits>[a8]' with bits in {list(SUPPORTED_WEIGHT_BITS)}"
            )
        return cls(int(match.group(1)), int(match.group(2)) if match.group(2) else None)


RecipeLike = Union[str, "QuantRecipe", Mapping[str, Any]]


@dataclass(frozen=True)
class QuantRecipe:
    """Weight/activation bits for every Conv2d and Linear of a model.

    >>> r = QuantRecipe.parse("w4a8")
    >>> (r.weight_bits, r.activation_bits, r.name, r.group_size)
    (4, 8, 'w4a8', 32)
    >>> str(QuantRecipe.parse("w4a8@torchao"))
    'w4a8@torchao'
    >>> QuantRecipe(2, 8, overrides={"classifier*": "w8a8"}).layer_quant("classifier.1")
    LayerQuant(weight_bits=8, activation_bits=8)
    """

    weight_bits: int = 8
    activation_bits: int | None = None
    overrides: tuple[tuple[str, LayerQuant], ...] = field(default=())
    exclude: tuple[str, ...] = field(default=())
    name: str | None = None
    #: the library the recipe compiles to: a name of :func:`~hf_fairquant.quantization.available_backends`
    backend: str = DEFAULT_BACKEND
    #: weights per scale of grouped low-bit weights (torchao int4/int2; optimum-quanto uses its own)
    group_size: int = DEFAULT_GROUP_SIZE

    def __post_init__(self) -> None:
        LayerQuant(self.weight_bits, self.activation_bits)  # validates the defaults
        if self.backend not in recipe_backends():
            raise FairQuantError(
                f"unknown quantization backend {self.backend!r}; allowed: {recipe_backends()}"
                + (" (it reads models quantized elsewhere: give its transformers quantization config as the recipe, "
                   "e.g. BitsAndBytesConfig(load_in_4bit=True) or 'bnb-nf4')" if isinstance(self.backend, str)
                   and self.backend in _reader_names() else "")
            )
        if not isinstance(self.group_size, int) or isinstance(self.group_size, bool) or self.group_size <= 0:
            raise FairQuantError(f"group_size must be a positive integer, got {self.group_size!r}")
        object.__setattr__(self, "overrides", tuple((p, LayerQuant.parse(q)) for p, q in _override_pairs(self.overrides)))
        object.__setattr__(self, "exclude", _exclude_patterns(self.exclude))
        _check_name(self)

    # ------------------------------------------------------------ parsing
    #: a recipe of presets and overrides can be trained (QAT) and explained
    trainable = True

    @property
    def row_name(self) -> str:
        """The name of the audit row of this recipe (``W4A8``, ``W4A8@TORCHAO``)."""
        return str(self).upper()

    def describe(self) -> str:
        return f"{self}: {self.default} by default" + (f", overrides {dict((p, str(q)) for p, q in self.overrides)}"
                                                       if self.overrides else "")

    @classmethod
    def parse(cls, value: RecipeLike) -> "QuantRecipe":
        """A preset string (``"w4a8"``), a mapping (YAML/JSON) or a recipe. A transformers
        quantization config is a recipe of the audit (:func:`parse_recipe`), not of QAT, explain
        or export: here it is refused with that said."""
        if isinstance(value, QuantRecipe):
            return value
        foreign = parse_foreign_recipe(value) if not isinstance(value, str) or not _PRESET_RE.match(
            value.partition("@")[0].strip().lower()) else None
        if foreign is not None:
            raise FairQuantError(
                f"{foreign} is a transformers quantization config: it is audited as transformers builds it (audit "
                "recipes, hf-fairquant audit --recipes), but quantization-aware training, explain and ONNX export "
                "take a preset recipe (w8a8, w4a8, w4, w2a8, with overrides)"
            )
        if isinstance(value, Mapping):
            allowed = {"weight_bits", "activation_bits", "overrides", "exclude", "name", "preset", "backend", "group_size"}
            unknown = set(value) - allowed
            if unknown:
                raise FairQuantError(f"unknown recipe key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
            data = dict(value)
            if "preset" in data:
                preset = data.pop("preset")
                base = LayerQuant.parse(preset)
                for key, implied in (("weight_bits", base.weight_bits), ("activation_bits", base.activation_bits)):
                    if key in data and data[key] != implied:
                        raise FairQuantError(
                            f"recipe preset {preset!r} means {key}={implied!r}, but the recipe also sets "
                            f"{key}={data[key]!r}: give one of them (for mixed bits use `overrides`)"
                        )
                    data[key] = implied
            for key in ("weight_bits", "activation_bits"):
                if isinstance(data.get(key), str) and data[key].strip().isdigit():  # YAML/CLI "4"
                    data[key] = int(data[key])
            bad = {k: data[k] for k in ("weight_bits", "activation_bits")
                   if k in data and data[k] is not None and (isinstance(data[k], bool) or not isinstance(data[k], int))}
            if bad:
                raise FairQuantError(f"recipe bits must be integers, got {bad}; allowed weight bits "
                                     f"{list(SUPPORTED_WEIGHT_BITS)}, activation bits None or 8")
            if "name" in data and data["name"] is not None and not isinstance(data["name"], str):
                raise FairQuantError(f"recipe name must be a string, got {data['name']!r}")
            return cls(**data)
        if isinstance(value, str):
            preset, _, backend = value.partition("@")
            base = LayerQuant.parse(preset)
            return cls(base.weight_bits, base.activation_bits, name=str(base), backend=backend.strip().lower() or DEFAULT_BACKEND)
        raise FairQuantError(
            f"cannot make a QuantRecipe from {type(value).__name__} {value!r}: give a preset string "
            f"({list(PRESETS)}, optionally '@<backend>'), a mapping (weight_bits, activation_bits, overrides, exclude, "
            "name, preset, backend) or a QuantRecipe"
        )

    # ------------------------------------------------------------ resolution
    @property
    def default(self) -> LayerQuant:
        return LayerQuant(self.weight_bits, self.activation_bits)

    @property
    def uses_activations(self) -> bool:
        return self.activation_bits is not None or any(q.activation_bits for _, q in self.overrides)

    def layer_quant(self, module_name: str) -> LayerQuant | None:
        """Bits for one module name: None if excluded, else the first matching override."""
        if any(fnmatchcase(module_name, p) for p in self.exclude):
            return None
        for pattern, quant in self.overrides:
            if fnmatchcase(module_name, pattern):
                return quant
        return self.default

    def plan(self, model: torch.nn.Module) -> dict[str, LayerQuant | None]:
        """``{module name: LayerQuant or None (excluded)}`` for every Conv2d/Linear/Conv1D of ``model``.

        Raises if the model has nothing to quantize or a pattern matches no module.
        """
        names = quantizable_modules(model)
        embeddings = named_embeddings(model, [p for p, _ in self.overrides])
        if embeddings:  # opt in: an override that names an embedding quantizes it (its weights only)
            wanted = set(names) | set(embeddings)
            names = [n for n, _ in model.named_modules() if n in wanted]
        for kind, patterns in (("override", [p for p, _ in self.overrides]), ("exclude", list(self.exclude))):
            for pattern in patterns:
                if not any(fnmatchcase(n, pattern) for n in names):
                    raise FairQuantError(
                        f"{kind} pattern {pattern!r} matches no Conv2d/Linear module of "
                        f"{type(model).__name__} (nor an nn.Embedding); its modules are: {_preview(names)}"
                    )
        plan = {n: self.layer_quant(n) for n in names}
        if all(q is None for q in plan.values()):
            raise FairQuantError(f"recipe {self} excludes every Conv2d/Linear module of {type(model).__name__}")
        return plan

    def effective_bits(self, model: torch.nn.Module) -> float:
        """Parameter-weighted mean weight bits this recipe would give ``model`` (see
        :func:`effective_bits`)."""
        plan = self.plan(model)
        return weighted_bits(
            (m.weight.numel(), plan[n].weight_bits if plan[n] else float_bits(m.weight))
            for n, m in model.named_modules() if n in plan
        )

    # ------------------------------------------------------------ display
    def __str__(self) -> str:
        text = self.name
        if not text:
            text = str(self.default)
            if self.overrides:
                text += "+" + ",".join(f"{p}:{q}" for p, q in self.overrides)
            if self.exclude:
                text += "-" + ",".join(self.exclude)
        suffix = f"@{self.backend}"
        return text if self.backend == DEFAULT_BACKEND or text.endswith(suffix) else text + suffix

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; :meth:`parse` reads it back (``name`` is the display name)."""
        out = {
            "name": str(self),
            "weight_bits": self.weight_bits,
            "activation_bits": self.activation_bits,
            "overrides": {p: str(q) for p, q in self.overrides},
            "exclude": list(self.exclude),
            "backend": self.backend,
        }
        if self.group_size != DEFAULT_GROUP_SIZE:
            out["group_size"] = self.group_size
        return out


_OVERRIDES_FORM = (
    "overrides map module-name patterns to bits, e.g. in YAML `overrides: {classifier: w8a8}` (or one "
    "`pattern: bits` per line under `overrides:`), in Python `overrides={'classifier': 'w8a8'}`; to keep a module "
    "in float, list it under `exclude`"
)


def _override_pairs(value: Any) -> list[tuple[str, Any]]:
    """``(pattern, bits)`` pairs from a mapping, a list of one-key mappings (YAML ``- classifier: w8``)
    or of pairs; None or empty (YAML's bare ``overrides:``) is none. A bare list of names says no
    bits, so it is refused with the mapping form."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if isinstance(item, Mapping) and len(item) == 1:
                items += list(item.items())
            elif isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
                items.append((item[0], item[1]))
            else:
                raise FairQuantError(f"recipe overrides: the item {item!r} of {list(value)!r} gives no bits; {_OVERRIDES_FORM}")
    else:
        raise FairQuantError(f"recipe overrides must be a mapping, got {type(value).__name__} {value!r}; {_OVERRIDES_FORM}")
    bad = [p for p, _ in items if not isinstance(p, (str, int, float)) or isinstance(p, bool)]
    if bad:
        raise FairQuantError(f"recipe override patterns must be module-name patterns (strings), got {bad!r}")
    return [(str(p), q) for p, q in items]


def _exclude_patterns(value: Any) -> tuple[str, ...]:
    """Module-name patterns kept in float: one string, a list of strings, or None/empty (none)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise FairQuantError(
            f"recipe exclude must be a module-name pattern or a list of them (e.g. exclude: [classifier, "
            f"'vit.embeddings.*']), got {type(value).__name__} {value!r}"
        )
    return tuple(value)


def is_preset(text: Any) -> bool:
    """Whether ``text`` is a preset string (``w4a8``, ``w8@torchao``)."""
    return isinstance(text, str) and bool(_PRESET_RE.match(text.partition("@")[0].strip().lower()))


def _reader_names() -> set[str]:
    from .backends import available_backends

    return set(available_backends()) - set(recipe_backends())


def parse_recipe(value: Any) -> Any:
    """An audit recipe: a :class:`QuantRecipe` (preset string, mapping, recipe) or a recipe a
    backend reads in its own form — a transformers quantization config (``BitsAndBytesConfig(
    load_in_4bit=True)``, YAML ``{transformers: BitsAndBytesConfig, load_in_4bit: true}``, an
    alias such as ``bnb-nf4``)."""
    if isinstance(value, QuantRecipe):
        return value
    if isinstance(value, str) and _PRESET_RE.match(value.partition("@")[0].strip().lower()):
        return QuantRecipe.parse(value)
    foreign = parse_foreign_recipe(value)
    return foreign if foreign is not None else QuantRecipe.parse(value)


def parse_recipes(values: Any) -> list[Any]:
    """Parse ``"w8a8,w4a8"``, a list of presets/mappings/transformers configs, or recipes."""
    if isinstance(values, str):
        values = split_commas(values)
    elif (isinstance(values, (QuantRecipe, Mapping)) or not isinstance(values, Iterable)
          or (not isinstance(values, (list, tuple)) and parse_foreign_recipe(values) is not None)):
        values = [values]  # one recipe (a transformers config iterates over its attributes)
    recipes = [parse_recipe(v) for v in values]
    if not recipes:
        raise FairQuantError(f"no quantization recipe given; allowed presets: {list(PRESETS)}")
    check_unique_names([str(r) for r in recipes])
    return recipes


def check_unique_names(names: Iterable[str], what: str = "quantization recipes") -> None:
    """Rows of a report are named by their recipe: two with one name (case-insensitive) would
    show as one. ``FP`` names the full-precision row."""
    seen: dict[str, str] = {}
    for name in names:
        key = name.upper()
        if key == "FP" or key in seen:
            other = "the full-precision row" if key == "FP" else repr(seen[key])
            raise FairQuantError(
                f"{what}: the name {name!r} is already taken by {other}; give each recipe a distinct `name`"
            )
        seen[key] = name


def _check_name(recipe: "QuantRecipe") -> None:
    """A name that reads as a preset (``w8a8``) must be what the recipe does: the same default
    bits, and no overrides or exclusions (a 2-bit recipe must not show as "W8")."""
    if recipe.name is None:
        return
    if not isinstance(recipe.name, str) or not recipe.name.strip():
        raise FairQuantError(f"recipe name must be a non-empty string, got {recipe.name!r}")
    if not _PRESET_RE.match(recipe.name.strip().lower()):
        return
    try:
        claimed = LayerQuant.parse(recipe.name)
    except FairQuantError:
        claimed = None
    if claimed != recipe.default or recipe.overrides or recipe.exclude:
        actual = str(replace(recipe, name=None))
        raise FairQuantError(
            f"recipe name {recipe.name!r} reads as a preset but the recipe is {actual}: rename it "
            f"(e.g. {actual.split('+')[0].split('-')[0] + '-mixed'!r}) or drop `name`"
        )


def quantizable_types() -> tuple[type, ...]:
    """The module classes a recipe plans (exact classes, not subclasses): ``Conv2d``, ``Linear``
    and transformers' ``Conv1D`` (GPT-2's attention and MLP: a Linear with a transposed weight,
    quantized as one by the backends)."""
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)  # loaded if a model holds one
    return QUANTIZABLE_TYPES + ((conv1d,) if conv1d is not None else ())


def is_conv1d(module: torch.nn.Module) -> bool:
    """Whether ``module`` is transformers' ``Conv1D`` (weight ``[in, out]``)."""
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return conv1d is not None and type(module) is conv1d


def quantizable_modules(model: torch.nn.Module) -> list[str]:
    """Names of the Conv2d/Linear/Conv1D modules (what a recipe plans)."""
    types = quantizable_types()
    names = [n for n, m in model.named_modules() if type(m) in types]
    if not names:
        raise FairQuantError(f"{type(model).__name__} has no Conv2d or Linear module to quantize (nor a transformers Conv1D)")
    return names


def named_embeddings(model: torch.nn.Module, patterns: Iterable[str]) -> list[str]:
    """The ``nn.Embedding`` modules an override pattern names: embeddings are quantized only when a
    recipe asks for them by name (e.g. ``overrides: {model.embed_tokens: w8}``), never by default."""
    patterns = list(patterns)
    return [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.Embedding) and any(fnmatchcase(n, p) for p in patterns)]


def _preview(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def float_bits(tensor: torch.Tensor) -> int:
    return torch.finfo(tensor.dtype).bits if tensor.is_floating_point() else 8 * tensor.element_size()


def weighted_bits(pairs: Iterable[tuple[int, int]]) -> float:
    pairs = list(pairs)
    total = sum(n for n, _ in pairs)
    return sum(n * b for n, b in pairs) / total
