"""The transformers backend: a transformers quantization config is a recipe.

``audit(model, data, [TorchAoConfig(Int8WeightOnlyConfig()), BitsAndBytesConfig(load_in_4bit=True), "w4a8"])``,
YAML ``{transformers: BitsAndBytesConfig, load_in_4bit: true, bnb_4bit_quant_type: nf4}`` and the
CLI (``--recipes bnb-nf4`` or ``--recipes BitsAndBytesConfig:load_in_4bit=true``) all make a
:class:`TransformersRecipe`. Its quantizer builds the model the way users get it: the
full-precision model is saved to a scratch folder and loaded back with
``from_pretrained(folder, quantization_config=config)`` — transformers' own integration, the
library's real kernels — and audited as transformers built it. The audit then saves and reloads
that model (``save_pretrained`` → ``from_pretrained``) and audits the reloaded one too when its
outputs differ (bitsandbytes NF4 on an AVX512-BF16 CPU: docs/quantizers.md).

Before any work (:meth:`TransformersRecipe.plan`): transformers' own environment check of the
config (the package, a GPU), which layers the config will quantize (transformers' quantizer
asked on a weightless ``meta`` copy of the model), and one tiny layer of every planned shape
quantized and run on this machine — so what the machine lacks (a GPU, a kernel package such as
``mslk``, a shape bitsandbytes' CPU kernel refuses) is an error naming the config, the layers and
what they need. A config transformers 5.25 cannot apply (``HqqConfig``: no ``get_quantize_ops``)
or one that would quantize no layer (``TorchAoConfig`` on GPT-2's ``Conv1D``) is refused too.

It also reads any model that carries a quantization config (``model.hf_quantizer``), saves it
with ``save_pretrained`` and loads pre-quantized checkpoints (:func:`load_pre_quantized`), after
checking that this machine can load their format.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Mapping

import torch

from ...errors import ArtifactError, FairQuantError, UnsupportedByBackendError
from . import ArtifactFormat, Plan, Publishing, Quantizer, register_backend
from .recognise import declared_quantization, describe_layers, quantized_by

NAME = "transformers"
#: The mapping key of a recipe that is a transformers quantization config (YAML, JSON).
RECIPE_KEY = "transformers"
#: quant_method → the library that stores and runs the weights
LIBRARY_OF = {"bitsandbytes": "bitsandbytes", "torchao": "torchao", "quanto": "optimum-quanto", "hqq": "hqq",
              "gptq": "gptqmodel", "awq": "gptqmodel (AWQ)", "compressed-tensors": "compressed-tensors",
              "fbgemm_fp8": "fbgemm-gpu", "fp8": "transformers fine-grained FP8", "eetq": "eetq"}
#: Short names for the configs covered on this machine (YAML/CLI: ``recipes: [bnb-nf4, torchao-int8]``):
#: alias → (config class, keyword arguments); extra options follow as ``alias:key=value``.
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "bnb-int8": ("BitsAndBytesConfig", {"load_in_8bit": True}),
    "bnb-nf4": ("BitsAndBytesConfig", {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}),
    "bnb-fp4": ("BitsAndBytesConfig", {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}),
    "torchao-int8": ("TorchAoConfig", {"quant_type": "Int8WeightOnlyConfig"}),
    "torchao-int8-dynamic": ("TorchAoConfig", {"quant_type": "Int8DynamicActivationInt8WeightConfig"}),
    "torchao-int4": ("TorchAoConfig", {"quant_type": {"IntxWeightOnlyConfig": {"weight_dtype": "int4", "granularity": {"PerGroup": 32}}}}),
    "torchao-int2": ("TorchAoConfig", {"quant_type": {"IntxWeightOnlyConfig": {"weight_dtype": "int2", "granularity": {"PerGroup": 32}}}}),
    "quanto-int8": ("QuantoConfig", {"weights": "int8"}),
    "quanto-int4": ("QuantoConfig", {"weights": "int4"}),
    "hqq-int4": ("HqqConfig", {"nbits": 4, "group_size": 64}),
}
#: Methods whose kernels need a CUDA GPU (checked after transformers' own environment check).
NEEDS_GPU = {"gptq": "GPTQ kernels (gptqmodel)", "awq": "AWQ kernels", "fbgemm_fp8": "fbgemm FP8 kernels",
             "fp8": "fine-grained FP8 kernels", "eetq": "EETQ kernels", "aqlm": "AQLM kernels", "vptq": "VPTQ kernels",
             "higgs": "HIGGS kernels (flute)", "spqr": "SpQR kernels", "bitnet": "BitNet kernels",
             "compressed-tensors": "compressed-tensors' quantized kernels (most of its formats)"}
#: Hints for errors a probe layer raised (substring of the message → what it means here).
_HINTS = (
    ("N must be divisible by block_n", "out_features divisible by 32 (bitsandbytes' CPU 4-bit kernel, taken in eval mode "
     "on a CPU with AVX512-BF16 as this one)"),
    ("is invalid for input of size", "in_features divisible by the blocksize, 64 (bitsandbytes' CPU 4-bit kernel)"),
    ("Requires mslk", "a kernel package this machine lacks (mslk >= 1.0, built for CUDA); "
     "IntxWeightOnlyConfig(weight_dtype=torch.int4) runs on a CPU"),
    ("compute capability", "a CUDA GPU"),
    ("CUDA", "a CUDA GPU"),
)


# ----------------------------------------------------------------------------- configs
def _transformers():
    import transformers

    transformers.logging.set_verbosity_error()  # unused-weights notes while loading
    return transformers


class _quiet:
    """No "Loading weights" / "Writing model shards" progress bars while the audit builds and
    saves a model (restored after)."""

    def __enter__(self) -> None:
        from transformers.utils import logging

        self.was = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()

    def __exit__(self, *exc: Any) -> None:
        from transformers.utils import logging

        if self.was:
            logging.enable_progress_bar()



def is_quantization_config(value: Any) -> bool:
    """Duck-typed: a transformers ``QuantizationConfigMixin`` (imports nothing)."""
    return not isinstance(value, (str, Mapping, type)) and hasattr(value, "quant_method") and hasattr(value, "to_dict")


def _method(config: Any) -> str:
    method = config.get("quant_method") if isinstance(config, Mapping) else getattr(config, "quant_method", None)
    return str(getattr(method, "value", method))


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _torchao_object(value: Any) -> Any:
    """A torchao config/granularity from YAML: ``"Int8WeightOnlyConfig"``, ``{IntxWeightOnlyConfig:
    {weight_dtype: int4, granularity: {PerGroup: 32}}}``; dtype names become torch dtypes."""
    import torchao.quantization as tq
    import torchao.quantization.granularity as tg

    def lookup(name: str) -> Any:
        for module in (tq, tg):
            if hasattr(module, name):
                return getattr(module, name)
        raise FairQuantError(f"torchao has no config or granularity named {name!r} (torchao.quantization)")

    if isinstance(value, str):
        return lookup(value)()
    if isinstance(value, Mapping) and len(value) == 1:
        (name, args), = value.items()
        cls = lookup(str(name))
        if isinstance(args, Mapping):
            kwargs = {}
            for key, arg in args.items():
                if isinstance(arg, str) and "dtype" in key:
                    arg = getattr(torch, arg)
                elif isinstance(arg, (Mapping, str)) and key in ("granularity", "weight_granularity", "act_granularity"):
                    arg = _torchao_object(arg)
                kwargs[key] = arg
            return cls(**kwargs)
        return cls() if args is None else cls(*(args if isinstance(args, list) else [args]))
    raise FairQuantError(f"cannot read a torchao config from {value!r}: give a class name or {{ClassName: {{arguments}}}}")


def make_config(class_name: str, options: Mapping[str, Any]) -> Any:
    """A transformers quantization config from its class name and keyword options (YAML values)."""
    transformers = _transformers()
    cls = getattr(transformers, class_name, None)
    if cls is None or not class_name.endswith("Config") or not hasattr(cls, "from_dict"):
        known = sorted(n for n in ("BitsAndBytesConfig", "TorchAoConfig", "QuantoConfig", "HqqConfig", "GPTQConfig",
                                   "AwqConfig", "CompressedTensorsConfig") if hasattr(transformers, n))
        raise FairQuantError(f"{class_name!r} is not a transformers quantization config; e.g. {known}, or an alias {sorted(ALIASES)}")
    options = dict(options)
    if "config" in options and isinstance(options["config"], Mapping):  # to_dict() form (results.json)
        from transformers.quantizers.auto import AutoQuantizationConfig

        return AutoQuantizationConfig.from_dict(copy.deepcopy(dict(options["config"])))
    if class_name == "TorchAoConfig" and "quant_type" in options:
        qt = options["quant_type"]
        if isinstance(qt, Mapping) and "default" in qt:  # TorchAoConfig.to_dict()'s serialised form
            return cls.from_dict({"quant_method": "torchao", **options})
        options["quant_type"] = _torchao_object(qt)
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise FairQuantError(f"{class_name}({', '.join(f'{k}={v!r}' for k, v in options.items())}) is not valid: {err}") from None


def short_name(config: Any) -> str:
    """A row name for a config: ``bnb-nf4``, ``torchao-int8``, ``torchao-int4``, ``quanto-int8``, …"""
    method = _method(config)
    if method == "bitsandbytes":
        if getattr(config, "load_in_8bit", False):
            return "bnb-int8"
        return f"bnb-{getattr(config, 'bnb_4bit_quant_type', 'nf4')}" + ("-dq" if getattr(config, "bnb_4bit_use_double_quant", False) else "")
    if method == "torchao":
        qt = getattr(config, "quant_type", None)
        kind = type(qt).__name__
        names = {"Int8WeightOnlyConfig": "int8", "Int8DynamicActivationInt8WeightConfig": "int8-dynamic",
                 "Float8WeightOnlyConfig": "float8", "Int4WeightOnlyConfig": "int4-packed"}
        if kind in names:
            return f"torchao-{names[kind]}"
        dtype = getattr(qt, "weight_dtype", None)
        if dtype is not None:
            bits = str(dtype).removeprefix("torch.")
            return f"torchao-{bits}" + ("a8" if "DynamicActivation" in kind else "")
        return "torchao-" + (kind.removesuffix("Config").lower() if kind != "str" else str(qt))
    if method == "quanto":
        return f"quanto-{getattr(config, 'weights', '')}"
    if method == "hqq":
        nbits = (getattr(config, "quant_config", {}) or {}).get("weight_quant_params", {}).get("nbits")
        return f"hqq-int{nbits}" if nbits else "hqq"
    return method


def config_text(config: Any) -> str:
    """``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4')``: the non-default options."""
    diff = config.to_diff_dict() if hasattr(config, "to_diff_dict") else config.to_dict()
    diff = {k: v for k, v in diff.items() if not k.startswith("_") and k != "quant_method"}
    if _method(config) == "torchao":
        qt = getattr(config, "quant_type", None)
        diff = {"quant_type": f"{type(qt).__name__}({_torchao_args(qt)})"}
        return f"{type(config).__name__}({diff['quant_type']})"
    return f"{type(config).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in diff.items()) + ")"


def _torchao_args(qt: Any) -> str:
    if not dataclasses.is_dataclass(qt):
        return ""
    default = type(qt)()
    parts = []
    for f in dataclasses.fields(qt):
        value = getattr(qt, f.name)
        try:
            same = value == getattr(default, f.name)
        except Exception:  # tensors, enums that do not compare
            same = False
        if not same:
            parts.append(f"{f.name}={str(value).removeprefix('torch.')}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- the recipe
@dataclasses.dataclass(frozen=True, eq=False)
class TransformersRecipe:
    """A transformers quantization config as an audit recipe (see the module docstring).

    ``config``: a ``QuantizationConfigMixin`` (``BitsAndBytesConfig``, ``TorchAoConfig``,
    ``QuantoConfig``, …); ``name``: the row name (default: :func:`short_name`)."""

    config: Any
    name: str | None = None
    backend: str = NAME

    # what the audit and the checks ask every recipe
    uses_activations = False  # activations, where quantized, are dynamic: no calibration data
    trainable = False  # no QAT / explain (no straight-through modules)

    def __str__(self) -> str:
        return self.name or short_name(self.config)

    @property
    def row_name(self) -> str:
        return str(self)

    @property
    def library(self) -> str:
        method = _method(self.config)
        return LIBRARY_OF.get(method, method)

    @property
    def config_class(self) -> str:
        return type(self.config).__name__

    def describe(self) -> str:
        return f"{self.library} via transformers {config_text(self.config)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; :func:`parse_recipe` reads it back."""
        return {"name": str(self), "backend": NAME, RECIPE_KEY: self.config_class, "library": self.library,
                "config": json.loads(json.dumps(self.config.to_dict(), default=str))}

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, TransformersRecipe) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def plan(self, model: torch.nn.Module) -> dict[str, Any]:
        """``{module: bits or None}`` for every Linear/Conv/Conv1D of ``model`` as this config will
        quantize it — after checking, before any work, that this machine can run it (see the
        module docstring). Raises :class:`~hf_fairquant.errors.UnsupportedByBackendError`."""
        return predict_plan(self, model)


def _recipe_error(recipe: TransformersRecipe, text: str) -> UnsupportedByBackendError:
    return UnsupportedByBackendError(f"recipe {recipe} ({config_text(recipe.config)}): {text}")


def _skeleton(model: torch.nn.Module) -> torch.nn.Module:
    """A weightless copy of a transformers model (its class, from its config, on ``meta``)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(type(model), "from_pretrained"):
        raise FairQuantError(f"a transformers quantization config quantizes a transformers PreTrainedModel, not a "
                             f"{type(model).__name__}")
    with torch.device("meta"):
        return type(model)(copy.deepcopy(config))


def _hf_quantizer(config: Any, pre_quantized: bool) -> Any:
    from transformers.quantizers.auto import AutoHfQuantizer

    return AutoHfQuantizer.from_config(copy.deepcopy(config), pre_quantized=pre_quantized)


def _environment_error(hf_quantizer: Any) -> str | None:
    """What transformers' own environment check of the config says this machine lacks, or None."""
    try:
        hf_quantizer.validate_environment(device_map=None, weights_only=True, dtype=torch.float32)
    except (ImportError, RuntimeError, ValueError, EnvironmentError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _applies_on_the_fly(hf_quantizer: Any) -> bool:
    """transformers 5 quantizes weights while loading through ``get_quantize_ops``; a quantizer
    that does not define it (HQQ in 5.25) raises NotImplementedError as soon as a weight needs it."""
    from transformers.quantizers.base import HfQuantizer

    return type(hf_quantizer).get_quantize_ops is not HfQuantizer.get_quantize_ops


def _weight_shapes(model: torch.nn.Module) -> dict[str, tuple[int, int, str]]:
    """``{module: (in_features, out_features, class)}`` of every Linear / Conv1D / Conv2d."""
    out = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if isinstance(module, torch.nn.Linear):
            out[name] = (module.in_features, module.out_features, kind)
        elif kind == "Conv1D" and hasattr(module, "nf"):
            out[name] = (module.weight.shape[0], module.nf, kind)
        elif isinstance(module, torch.nn.Conv2d):
            out[name] = (module.in_channels * module.kernel_size[0] * module.kernel_size[1], module.out_channels, kind)
    return out


def predicted_modules(recipe: TransformersRecipe, model: torch.nn.Module) -> tuple[list[str], Any]:
    """The modules transformers will quantize under ``recipe`` (asked of its own quantizer on a
    ``meta`` copy), and that quantizer; environment problems raise first."""
    hf_quantizer = _hf_quantizer(recipe.config, pre_quantized=False)
    problem = _environment_error(hf_quantizer)
    if problem is not None:
        raise _recipe_error(recipe, f"cannot run on this machine: {problem}")
    skeleton = _skeleton(model)
    try:
        hf_quantizer.preprocess_model(skeleton, dtype=torch.float32, device_map=None, checkpoint_files=None,
                                      use_kernels=False)
        params = [n for n, _ in skeleton.named_parameters() if hf_quantizer.param_needs_quantization(skeleton, n)]
    except Exception as err:  # noqa: BLE001 - a library's own refusal, reported with the config
        raise _recipe_error(recipe, f"transformers cannot prepare {type(model).__name__} for it: {type(err).__name__}: {err}") from None
    modules = list(dict.fromkeys(p.rsplit(".", 1)[0] for p in params))
    return modules, hf_quantizer


_PROBED: dict[tuple[str, int, int, bool], str | None] = {}


def _probe(recipe: TransformersRecipe, in_features: int, out_features: int, bias: bool) -> str | None:
    """Quantize one random ``Linear(in_features, out_features)`` with the config's library and run
    it once in eval mode, as the audit will: the library's error, or None. Cached per shape."""
    key = (json.dumps(recipe.config.to_dict(), sort_keys=True, default=str), in_features, out_features, bias)
    if key in _PROBED:
        return _PROBED[key]
    method = _method(recipe.config)
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(out_features, in_features, generator=generator) * 0.02)
    x = torch.randn(2, in_features, generator=generator)
    problem = None
    try:
        with torch.no_grad():
            if method == "torchao":
                from torchao.quantization import quantize_

                holder = torch.nn.Sequential(linear)
                quantize_(holder, copy.deepcopy(recipe.config.quant_type))
                holder.eval()(x)
            elif method == "bitsandbytes":
                _bnb_layer(recipe.config, linear).eval()(x)
    except Exception as err:  # noqa: BLE001 - whatever the library raises is what the machine lacks
        problem = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".strip()
    _PROBED[key] = problem
    return problem


def _bnb_layer(config: Any, linear: torch.nn.Linear) -> torch.nn.Module:
    import bitsandbytes as bnb

    bias = linear.bias is not None
    if getattr(config, "load_in_8bit", False):
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False,
                                    threshold=config.llm_int8_threshold)
        layer.weight = bnb.nn.Int8Params(linear.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
    else:
        quant_type = config.bnb_4bit_quant_type
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias, compute_dtype=torch.float32,
                                  quant_type=quant_type, compress_statistics=config.bnb_4bit_use_double_quant)
        layer.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False, quant_type=quant_type,
                                         compress_statistics=config.bnb_4bit_use_double_quant)
    if bias:
        layer.bias = torch.nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    return layer.to("cpu")


def _hint(problem: str) -> str:
    for needle, meaning in _HINTS:
        if needle in problem:
            return meaning
    return "what this machine lacks (the library's message says what)"


def _nominal_bits(config: Any) -> int:
    method = _method(config)
    if method == "bitsandbytes":
        return 8 if getattr(config, "load_in_8bit", False) else 4
    if method == "torchao":
        dtype = getattr(getattr(config, "quant_type", None), "weight_dtype", None)
        return {torch.int4: 4, torch.int2: 2}.get(dtype, 8) if dtype is not None else (
            4 if "Int4" in type(config.quant_type).__name__ else 8)
    if method == "quanto":
        return {"int8": 8, "int4": 4, "int2": 2, "float8": 8}.get(str(config.weights), 8)
    if method == "hqq":
        return int((config.quant_config or {}).get("weight_quant_params", {}).get("nbits", 4))
    return 8


def predict_plan(recipe: TransformersRecipe, model: torch.nn.Module) -> dict[str, Any]:
    from ..recipe import LayerQuant

    modules, hf_quantizer = predicted_modules(recipe, model)
    shapes = _weight_shapes(model)
    if not modules:
        kinds: dict[str, list[str]] = {}
        for name, (_, _, kind) in shapes.items():
            kinds.setdefault(kind, []).append(name)
        listing = "; ".join(f"{len(v)} {k} ({', '.join(v[:3])}{', …' if len(v) > 3 else ''})" for k, v in kinds.items())
        raise _recipe_error(
            recipe, f"quantizes no layer of {type(model).__name__}: transformers' {recipe.config_class} integration converts "
            f"nn.Linear layers (bitsandbytes also transformers' Conv1D), minus the output embedding; this model's layers "
            f"are {listing or 'none'}. Use a preset (w8, w4a8, …: quanto and torchao quantize Conv1D as a Linear) or "
            f"BitsAndBytesConfig")
    if not _applies_on_the_fly(hf_quantizer):
        raise _recipe_error(
            recipe, f"transformers {_transformers().__version__} cannot apply it: its {type(hf_quantizer).__name__} has no "
            "get_quantize_ops, so from_pretrained raises NotImplementedError ('… is not available yet') on the first weight "
            f"({modules[0]}). Apply the library directly (hqq: HQQLinear on each nn.Linear) and audit the model with "
            "audit(..., quantized_models={name: model})")
    problems: dict[str, list[str]] = {}
    for name in modules:
        if name not in shapes:
            continue
        in_f, out_f, _ = shapes[name]
        bias = getattr(model.get_submodule(name), "bias", None) is not None
        problem = _probe(recipe, in_f, out_f, bias)
        if problem is not None:
            problems.setdefault(problem, []).append(f"{name} ({in_f}→{out_f})")
    if problems:
        lines = "; ".join(f"{', '.join(names[:6])}{' …' if len(names) > 6 else ''}: {problem} — it needs {_hint(problem)}"
                          for problem, names in problems.items())
        skip = sorted({n.split(" ")[0].rsplit(".", 1)[-1] for names in problems.values() for n in names})
        remedy = (f"; keep them float with llm_int8_skip_modules={skip!r}" if _method(recipe.config) == "bitsandbytes"
                  else "")
        raise _recipe_error(recipe, f"these layers cannot run on this machine — {lines}{remedy}")
    bits = _nominal_bits(recipe.config)
    planned = set(modules)
    return {name: (LayerQuant.observed_as(bits) if name in planned else None) for name in shapes}


# ----------------------------------------------------------------------------- parsing
def parse_recipe(value: Any) -> TransformersRecipe | None:
    """A :class:`TransformersRecipe` from a config object, a mapping with a ``transformers`` key,
    an alias (``bnb-nf4``) or ``ConfigClass:key=value:…`` / ``alias:key=value``; None otherwise."""
    if isinstance(value, TransformersRecipe):
        return value
    if is_quantization_config(value):
        return TransformersRecipe(value)
    if isinstance(value, Mapping) and RECIPE_KEY in value:
        options = {k: v for k, v in value.items() if k not in (RECIPE_KEY, "name", "backend", "library")}
        head = value[RECIPE_KEY]
        if not isinstance(head, str):
            raise FairQuantError(f"recipe key {RECIPE_KEY!r} names a transformers quantization config class or an alias "
                                 f"({sorted(ALIASES)}), got {head!r}")
        return TransformersRecipe(_config_from(head, options), value.get("name"))
    if isinstance(value, str):
        head, *parts = value.strip().split(":")
        if head not in ALIASES and not (head.endswith("Config") and head[:1].isupper()):
            return None
        options = {}
        for part in parts:
            key, sep, text = part.partition("=")
            if not sep or not key.strip():
                raise FairQuantError(f"recipe {value!r}: options follow the config as ':key=value', got {part!r}")
            options[key.strip()] = _yaml_value(text)
        return TransformersRecipe(_config_from(head, options))
    return None


def _config_from(head: str, options: Mapping[str, Any]) -> Any:
    if head in ALIASES:
        class_name, base = ALIASES[head]
        return make_config(class_name, {**base, **options})
    return make_config(head, options)


# ----------------------------------------------------------------------------- the quantizer
def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


class TransformersQuantizer(Quantizer):
    """Builds a model with ``from_pretrained(folder, quantization_config=...)`` and reads models
    that carry a transformers quantization config."""

    name = NAME
    builds_new_model = True
    audits_round_trip = True
    reads_foreign_models = True

    def __init__(self, recipe: TransformersRecipe | None = None) -> None:
        self.recipe = recipe

    @staticmethod
    def parse_recipe(value: Any) -> TransformersRecipe | None:
        return parse_recipe(value)

    def configure(self, recipe: Any) -> "TransformersQuantizer":
        if not isinstance(recipe, TransformersRecipe):
            raise UnsupportedByBackendError(
                f"backend {NAME} takes a transformers quantization config as its recipe (e.g. BitsAndBytesConfig("
                f"load_in_4bit=True), YAML {{{RECIPE_KEY}: BitsAndBytesConfig, load_in_4bit: true}}, or {sorted(ALIASES)}), "
                f"not {recipe}")
        return TransformersQuantizer(recipe)

    def check(self, model: torch.nn.Module, plan: Plan) -> None:
        if self.recipe is None:
            raise UnsupportedByBackendError(f"backend {NAME} quantizes with a transformers quantization config: configure it with one")

    def apply(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        """The full-precision ``model`` saved to a scratch folder and loaded back with the config:
        a new model, as transformers builds it (``model`` is not changed)."""
        self.check(model, plan)
        transformers = _transformers()
        folder = Path(tempfile.mkdtemp(prefix="hf_fairquant_fp_"))
        try:
            with _quiet():
                model.save_pretrained(folder)
                built = type(model).from_pretrained(folder, quantization_config=copy.deepcopy(self.recipe.config))
        except Exception as err:
            shutil.rmtree(folder, ignore_errors=True)
            raise FairQuantError(f"recipe {self.recipe}: from_pretrained(..., quantization_config={config_text(self.recipe.config)}) "
                                 f"failed: {type(err).__name__}: {err}") from err
        weakref.finalize(built, shutil.rmtree, str(folder), True)  # weights may be memory-mapped from it
        del transformers
        built.eval()
        if not quantized_by(built):
            raise UnsupportedByBackendError(f"recipe {self.recipe}: transformers built {type(model).__name__} without "
                                            "quantizing any layer")
        return built

    def freeze(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def calibrate(self, model: torch.nn.Module, batches: Any) -> None:
        """Nothing to record: activations, where quantized, are dynamic."""

    def needs_calibration(self, plan: Plan) -> bool:
        return False

    def owns(self, model: torch.nn.Module) -> bool:
        """A model carrying a transformers quantization config that quantized at least one layer."""
        return declared_quantization(model) is not None and bool(quantized_by(model))

    def layer_bits(self, model: torch.nn.Module) -> dict:
        from ..recipe import LayerQuant

        return {n: LayerQuant.observed_as(i.weight_bits, i.activation_bits)
                for n, i in describe_layers(model).items() if i.quantized}

    def size_bytes(self, model: torch.nn.Module) -> int:
        from .bitsandbytes import foreign_size_bytes

        return foreign_size_bytes(model)  # never state_dict(): bitsandbytes 4-bit would repack

    def describe(self, model: torch.nn.Module) -> str:
        declared = declared_quantization(model) or {}
        libraries = ", ".join(quantized_by(model)) or "no library"
        config = model.__dict__.get("hf_quantizer")
        config = getattr(config, "quantization_config", None) or getattr(getattr(model, "config", None), "quantization_config", None)
        text = config_text(config) if config is not None and not isinstance(config, Mapping) else (declared.get("config") or "")
        return f"{libraries} via transformers {text}".strip()


# ----------------------------------------------------------------------------- the artifact
class TransformersArtifact(ArtifactFormat):
    """``save_pretrained`` of a model transformers quantized (its config in ``config.json``):
    ``from_pretrained`` loads it back with the library installed."""

    name = NAME
    publishing = Publishing(
        library="transformers quantization",
        loads_with_transformers=True,
        note="Quantized by transformers' own integration of the library named in config.json's quantization_config.",
        activations="dynamic 8-bit activations where the library quantizes them",
        tags=(),
    )
    expects = "config.json with a quantization_config transformers loads, and model.safetensors"

    def artifact_files(self) -> tuple[str, ...]:
        return ("config.json", "model.safetensors")

    def save(self, model: torch.nn.Module, folder: Path, recipe: Any = None) -> None:
        if model.__dict__.get("hf_quantizer") is None:
            raise FairQuantError(f"{type(model).__name__} carries no transformers quantization config: save it with its own backend")
        model.save_pretrained(folder)

    def can_load(self, folder: Path) -> bool:
        try:
            config = json.loads((Path(folder) / "config.json").read_text())
        except (OSError, ValueError):
            return False
        method = _method(config.get("quantization_config") or {})
        return method in LIBRARY_OF and method not in ("torchao", "quanto")  # those have their own artifact formats

    def load(self, folder: Path) -> torch.nn.Module:
        return load_pre_quantized(folder)

    def load_checkpoint(self, path_or_id: Any, model_class: type | None = None) -> torch.nn.Module:
        return load_pre_quantized(path_or_id, model_class)

    def check_checkpoint(self, path_or_id: Any) -> Any:
        return check_pre_quantized(path_or_id)

    def save_and_reload(self, model: torch.nn.Module) -> tuple[torch.nn.Module | None, int | None, str | None]:
        """What ships: ``model`` saved (``save_pretrained``) and loaded back with ``from_pretrained``;
        (reloaded model or None, the saved folder's bytes or None, why it could not, or None)."""
        folder = Path(tempfile.mkdtemp(prefix="hf_fairquant_artifact_"))
        try:
            with _quiet():
                self.save(model, folder)
                size = _folder_bytes(folder)
                reloaded = load_pre_quantized(folder, model_class=type(model))
        except Exception as err:  # noqa: BLE001 - e.g. QuantoConfig: "not serializable"
            shutil.rmtree(folder, ignore_errors=True)
            return None, None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        weakref.finalize(reloaded, shutil.rmtree, str(folder), True)
        return reloaded, size, None


# ----------------------------------------------------------------------------- pre-quantized checkpoints
def read_checkpoint_config(path_or_id: str | Path) -> tuple[dict[str, Any], str]:
    """(``config.json`` of a local folder or Hub repo, where it came from); only that file is fetched."""
    from ..._paths import local_folder_or_hub_id

    where = local_folder_or_hub_id(path_or_id, "quantized model")
    if isinstance(where, Path):
        file = where / "config.json"
        if not file.is_file():
            raise FairQuantError(f"{where} has no config.json: not a transformers checkpoint folder")
    else:
        from huggingface_hub import hf_hub_download

        try:
            file = Path(hf_hub_download(where, "config.json"))
        except Exception as err:  # offline, not found, gated
            raise ArtifactError(f"{where} is not a local folder, and its config.json could not be fetched from the Hub "
                                f"({type(err).__name__}: {err})") from err
    try:
        return json.loads(file.read_text(encoding="utf-8")), str(where)
    except ValueError as err:
        raise ArtifactError(f"{file} is not valid JSON ({err})") from None


def check_pre_quantized(path_or_id: str | Path, config: dict[str, Any] | None = None) -> Any:
    """Before any work: the checkpoint declares a quantization this machine can load (its package,
    a GPU its kernels need). Returns the quantization config object; raises naming the format
    and what it needs."""
    if config is None:
        config, _ = read_checkpoint_config(path_or_id)
    qc = config.get("quantization_config")
    if not qc:
        raise FairQuantError(f"{path_or_id} declares no quantization_config in config.json: a full-precision checkpoint, "
                             "not a quantized one (give it as --model, or quantize it with --recipes)")
    method = _method(qc)
    from transformers.quantizers.auto import AutoQuantizationConfig

    what = f"{path_or_id}: a pre-quantized {method} checkpoint"
    gpu = f"; its kernels need {NEEDS_GPU[method]} on a CUDA GPU" if method in NEEDS_GPU else ""
    try:
        qconfig = AutoQuantizationConfig.from_dict(copy.deepcopy(qc))
    except ImportError as err:  # the config class itself needs its package (compressed-tensors)
        raise UnsupportedByBackendError(f"{what} cannot load on this machine: {type(err).__name__}: {err}{gpu}") from None
    except ValueError as err:  # an unknown quant_method
        raise FairQuantError(f"{what} that transformers {_transformers().__version__} cannot read: {err}") from None
    what += f" ({type(qconfig).__name__})"
    try:
        problem = _environment_error(_hf_quantizer(qconfig, pre_quantized=True))
    except (ImportError, ValueError, TypeError, RuntimeError) as err:
        problem = f"{type(err).__name__}: {err}"
    if problem is not None:
        raise UnsupportedByBackendError(f"{what} cannot load on this machine: {problem}{gpu}")
    if method in NEEDS_GPU and not torch.cuda.is_available():
        raise UnsupportedByBackendError(f"{what} needs {NEEDS_GPU[method]} on a CUDA GPU; this machine has none "
                                        "(torch.cuda.is_available() is False)")
    return qconfig


def load_pre_quantized(path_or_id: str | Path, model_class: type | None = None) -> torch.nn.Module:
    """A pre-quantized checkpoint (local folder or Hub id) loaded with ``from_pretrained``, as the
    class ``model_class`` (the base model's, so both heads match) or its ``config.architectures``.
    Checked first (:func:`check_pre_quantized`); missing or unexpected weights raise."""
    config, where = read_checkpoint_config(path_or_id)
    check_pre_quantized(where, config)
    transformers = _transformers()
    arch = (config.get("architectures") or [None])[0]
    if model_class is None:
        model_class = getattr(transformers, arch, None) if arch else None
        if model_class is None:
            raise FairQuantError(f"config.architectures of {where} names {arch!r}, not a transformers model class")
    elif arch is not None and arch != model_class.__name__:
        raise FairQuantError(f"{where} is a {arch} checkpoint, but the base model is a {model_class.__name__}: audit a "
                             "quantized version of the same architecture (the same head)")
    with _quiet():
        model, info = model_class.from_pretrained(where, output_loading_info=True)
    problems = {k: sorted(v)[:8] for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise ArtifactError(f"the weights in {where} do not match {model_class.__name__}: {problems}")
    return model.eval()


QUANTIZER = TransformersQuantizer()
register_backend(NAME, QUANTIZER, TransformersArtifact())
