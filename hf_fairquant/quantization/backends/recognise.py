"""Recognise how a model was quantized — by any library, with no set-up.

A model quantized elsewhere (``from_pretrained(..., quantization_config=...)``, torchao's
``quantize_``, optimum-quanto, bitsandbytes, HQQ, ``torch.ao`` dynamic quantization) is read off
its modules and weight tensors: :func:`describe_layers` lists every weight-bearing module with what
it stores, :func:`quantized_by` names the libraries found, :func:`effective_bits` averages the
weight bits over all of them, and :func:`declared_quantization` reads what
``model.hf_quantizer`` / ``config.quantization_config`` claims (so a config that quantized nothing —
GPT-2's ``Conv1D`` under ``TorchAoConfig`` — shows up as a claim with no quantized layer).

Nothing here imports a quantization library: a module or tensor of a library exists only if that
library was imported, so recognition goes by the class's defining module (``type(x).__module__``)
and class names along its MRO, and reads attributes. This module imports only torch and
:mod:`hf_fairquant.errors`; it is self-contained, so the backend registry uses it to find the
backend of a model quantized elsewhere (``hf_fairquant.quantization.recognise`` re-exports it).

Weight-bearing means: a known float layer (``nn.Linear``, ``nn.Conv1d/2d/3d`` and transposed,
transformers' ``Conv1D``, ``nn.Embedding``/``EmbeddingBag``, and their subclasses defined in torch or
transformers' model code), a quantized replacement from a known library, or any other module that
directly owns a parameter or buffer with ``weight`` in its name and at least two dimensions, a
tensor subclass as a weight, a ``W_q`` tensor, or packed parameters. Anything weight-bearing that is
not recognised raises :class:`~hf_fairquant.errors.FairQuantError` naming the module and its class:
a layer is never skipped (an unrecognised fake-quantizing ``Linear`` subclass would otherwise be
counted as 32-bit float).

Counting: ``numel`` is the number of weights (the float weight's shape: for packed 4-bit formats,
the original ``[out, in]``); ``bytes`` is what the layer stores for its weight, quantization state
included (scales, zero points, absmax, code tables, outlier-free int8 row scales), the bias
excluded. ``weight_bits`` is the nominal width (NF4/FP4 = 4, int8 = 8, a float weight its dtype's
width); ``storage_bits`` (= 8·bytes/numel) counts the state too. A weight tied to another module's
(GPT-2's ``lm_head`` and ``wte``) is listed for both modules with ``tied_to`` set on the second,
and counted once by :func:`effective_bits`.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, replace
from typing import Any, Iterator

import torch

from ...errors import FairQuantError

__all__ = [
    "LIBRARIES",
    "LayerInfo",
    "declared_quantization",
    "describe_layers",
    "effective_bits",
    "is_embedding",
    "quantized_by",
]

#: library names as reported (``LayerInfo.library``, :func:`quantized_by`)
LIBRARIES = ("bitsandbytes", "hqq", "optimum-quanto", "torch.ao", "torchao")

#: ``quant_method`` of a transformers quantization config → library name
_QUANT_METHOD_LIBRARY = {
    "bitsandbytes": "bitsandbytes",
    "torchao": "torchao",
    "quanto": "optimum-quanto",
    "hqq": "hqq",
}


@dataclass(frozen=True)
class LayerInfo:
    """What one weight-bearing module stores.

    kind: the module's class name (``Linear``, ``Conv1D``, ``Linear4bit``, ``QLinear``, …).
    library: the quantization library (one of :data:`LIBRARIES`), or None for a float layer.
    weight_bits: nominal bits per weight (float layers: the dtype's width).
    activation_bits: bits the layer quantizes its input to, or None (weight-only / float).
    activation_mode: ``"dynamic"`` (ranges computed per call), ``"static"`` (calibrated ranges),
        or None.
    numel: number of weights (the float weight's element count).
    bytes: bytes stored for the weight and its quantization state (bias excluded).
    weight_format: the stored form, e.g. ``"Params4bit(nf4, blocksize 64)"``, ``"Int8Tensor"``,
        ``"float32"``, ``"float32, fake-quantized"`` (simulated: the float weight is stored).
    tied_to: the name of an earlier module holding this very weight (counted there), or None.
    """

    kind: str
    library: str | None
    weight_bits: float
    activation_bits: int | None
    activation_mode: str | None
    numel: int
    bytes: int
    weight_format: str = ""
    tied_to: str | None = None

    @property
    def quantized(self) -> bool:
        return self.library is not None

    @property
    def storage_bits(self) -> float:
        """Bits per weight as stored, quantization state included (8 · bytes / numel)."""
        return 8.0 * self.bytes / self.numel if self.numel else 0.0


# ----------------------------------------------------------------------------- public API
def describe_layers(model: torch.nn.Module, *, strict: bool = True) -> dict[str, LayerInfo]:
    """``{module name: LayerInfo}`` for every weight-bearing module of ``model``, in module order.

    Raises :class:`FairQuantError` naming a weight-bearing module this cannot read (an unknown
    layer type, an unknown tensor subclass of a known library, an uninitialised quantized layer);
    with ``strict=False`` such a module is left out instead (for a model whose own backend knows
    its layers).
    """
    out: dict[str, LayerInfo] = {}
    first_holder: dict[int, str] = {}
    for name, module in model.named_modules():
        try:
            info = _describe(name, module)
        except FairQuantError:
            if strict:
                raise
            continue
        if info is None:
            continue
        key = _weight_identity(module)
        if key is not None:
            if key in first_holder:
                info = _replace(info, tied_to=first_holder[key])
            else:
                first_holder[key] = name
        out[name] = info
    return out


def quantized_by(model: torch.nn.Module) -> list[str]:
    """The libraries whose quantized layers ``model`` holds, sorted; ``[]`` for a float model.

    Read off the layers (a ``quantization_config`` that quantized nothing does not count: see
    :func:`declared_quantization`)."""
    return sorted({info.library for info in describe_layers(model).values() if info.library is not None})


def effective_bits(model: torch.nn.Module, *, count_state: bool = False) -> float:
    """Weight bits averaged over every weight-bearing module, weighted by ``numel``.

    Float layers count their dtype's width (32 for float32), so what a quantizer left float shows
    in the number; a tied weight counts once. ``count_state=True`` uses each layer's
    :attr:`LayerInfo.storage_bits` (scales, absmax, code tables included) instead of the nominal
    width. A float model gives its dtype's width (32.0 for float32)."""
    layers = describe_layers(model)
    counted = [info for info in layers.values() if info.tied_to is None]
    total = sum(info.numel for info in counted)
    if not total:
        raise FairQuantError(
            f"{type(model).__name__} has no weight-bearing module (looked for Linear, Conv1d/2d/3d, "
            f"transformers Conv1D, Embedding and the quantized layers of {', '.join(LIBRARIES)})"
        )
    bits = (info.storage_bits if count_state else info.weight_bits for info in counted)
    return sum(b * info.numel for b, info in zip(bits, counted)) / total


def declared_quantization(model: torch.nn.Module) -> dict[str, Any] | None:
    """What the model's transformers quantizer / config claims, or None if nothing does.

    ``{"library": …, "quant_method": …, "config": <class name>, "hf_quantizer": <class name or
    None>}``. A model can claim a quantization that quantized no layer (GPT-2's ``Conv1D`` under
    ``TorchAoConfig``, ``QuantoConfig`` or ``HqqConfig``); compare with :func:`quantized_by`."""
    hf_quantizer = model.__dict__.get("hf_quantizer")
    qconfig = getattr(hf_quantizer, "quantization_config", None)
    config = getattr(model, "config", None)
    if qconfig is None and config is not None:
        qconfig = getattr(config, "quantization_config", None)
    if qconfig is None and hf_quantizer is None:
        return None
    method = qconfig.get("quant_method") if isinstance(qconfig, dict) else getattr(qconfig, "quant_method", None)
    method = getattr(method, "value", method)  # transformers' QuantizationMethod enum
    return {
        "library": _QUANT_METHOD_LIBRARY.get(str(method), None if method is None else str(method)),
        "quant_method": None if method is None else str(method),
        "config": None if qconfig is None else type(qconfig).__name__,
        "hf_quantizer": None if hf_quantizer is None else type(hf_quantizer).__name__,
    }


def is_embedding(info: LayerInfo) -> bool:
    """Whether a described layer is an embedding table (a lookup, not a matmul: ``Embedding``,
    ``EmbeddingBag`` and the quantized embeddings of the libraries)."""
    return "Embedding" in info.kind


# ----------------------------------------------------------------------------- helpers
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)
_FLOAT_BASES = (torch.nn.Linear, torch.nn.modules.conv._ConvNd, torch.nn.Embedding, torch.nn.EmbeddingBag)


def _replace(info: LayerInfo, **changes: Any) -> LayerInfo:
    return replace(info, **changes)


def _mro_modules(obj: Any) -> Iterator[tuple[str, str]]:
    """(defining module, class name) along the MRO of ``obj``'s class."""
    for cls in type(obj).__mro__:
        yield cls.__module__ or "", cls.__name__


def _from(obj: Any, prefix: str, names: tuple[str, ...] | None = None) -> bool:
    """True if a class in ``obj``'s MRO is defined under ``prefix`` (and, if given, is one of ``names``)."""
    return any(
        (mod == prefix or mod.startswith(prefix + ".")) and (names is None or cls in names) for mod, cls in _mro_modules(obj)
    )


def _conv1d_type() -> type | None:
    """transformers' ``Conv1D`` if transformers is loaded (a model cannot hold one otherwise)."""
    mod = sys.modules.get("transformers.pytorch_utils")
    return getattr(mod, "Conv1D", None)


def _is_plain(t: Any) -> bool:
    return type(t) in _PLAIN_TENSORS


def _own_weight(module: torch.nn.Module) -> Any:
    """The module's own ``weight`` parameter/buffer/attribute (not a method), or None."""
    w = module.__dict__.get("_parameters", {}).get("weight")
    if w is None:
        w = module.__dict__.get("_buffers", {}).get("weight")
    if w is None:
        w = module.__dict__.get("weight")
    return w if isinstance(w, torch.Tensor) else None


def _weight_identity(module: torch.nn.Module) -> int | None:
    w = _own_weight(module)
    return None if w is None else id(w)


def tensor_bytes(t: Any) -> int:
    """Bytes of a tensor; a tensor subclass counts the plain tensors it flattens to."""
    if t is None or not isinstance(t, torch.Tensor):
        return 0
    if not _is_plain(t) and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    if t.is_quantized:  # torch.ao quantized tensor: int repr + per-channel params
        size = t.untyped_storage().nbytes() if t.dtype == torch.quint4x2 else t.numel() * t.element_size()
        if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
            size += tensor_bytes(t.q_per_channel_scales()) + tensor_bytes(t.q_per_channel_zero_points())
        else:
            size += 16  # one double scale and one int64 zero point
        return size
    return t.numel() * t.element_size()


def _dtype_bits(dtype: Any) -> float:
    """Bits of a torch dtype, quanto qtype, torchao TorchAODType or a name like ``int4``."""
    if isinstance(dtype, torch.dtype):
        if dtype.is_floating_point or dtype.is_complex:
            return float(torch.finfo(dtype).bits) if dtype.is_floating_point else float(dtype.itemsize * 8)
        if dtype == torch.bool:
            return 1.0
        name = str(dtype)
    else:
        bits = getattr(dtype, "bits", None)
        if isinstance(bits, int):
            return float(bits)
        name = str(getattr(dtype, "name", dtype))
    m = re.search(r"u?int(\d+)", name, re.IGNORECASE) or re.search(r"float(\d+)", name, re.IGNORECASE)
    if m:
        return float(m.group(1))
    raise FairQuantError(f"cannot tell the bit width of dtype {dtype!r}")


def _float_info(module: torch.nn.Module, weight: torch.Tensor, fmt: str | None = None) -> LayerInfo:
    return LayerInfo(
        kind=type(module).__name__, library=None, weight_bits=_dtype_bits(weight.dtype), activation_bits=None,
        activation_mode=None, numel=weight.numel(), bytes=weight.numel() * weight.element_size(),
        weight_format=fmt or str(weight.dtype).removeprefix("torch."),
    )


def _looks_weight_bearing(module: torch.nn.Module) -> str | None:
    """Why an unrecognised module counts as weight-bearing (a description), or None."""
    for kind in ("_parameters", "_buffers"):
        for pname, t in module.__dict__.get(kind, {}).items():
            if t is None:
                continue
            if "weight" in pname.lower() and t.ndim >= 2:
                return f"{kind[1:-1]} {pname!r} of shape {tuple(t.shape)}"
            if not _is_plain(t) and type(t).__name__ not in ("Buffer",):
                return f"{kind[1:-1]} {pname!r} of type {type(t).__name__}"
    if getattr(module, "W_q", None) is not None:
        return "a packed weight 'W_q'"
    for attr in ("_packed_params", "_all_weight_values"):
        if attr in module.__dict__ or attr in module.__dict__.get("_modules", {}):
            return f"packed parameters {attr!r}"
    return None


def _unknown(name: str, module: torch.nn.Module, why: str) -> FairQuantError:
    cls = type(module)
    return FairQuantError(
        f"module {name or '<root>'!r} ({cls.__module__}.{cls.__qualname__}) holds a weight ({why}) but is not a "
        f"layer type hf_fairquant can read: known are float Linear/Conv1d/Conv2d/Conv3d/ConvTranspose, "
        f"transformers Conv1D, Embedding/EmbeddingBag and the quantized layers of {', '.join(LIBRARIES)}; "
        f"it is not skipped, because its bits would be guessed"
    )


# ----------------------------------------------------------------------------- per library
def _describe(name: str, module: torch.nn.Module) -> LayerInfo | None:
    weight = _own_weight(module)
    # libraries, most specific first (bnb / quanto / torchao-QAT layers subclass nn.Linear)
    if _from(module, "torch.ao.nn.quantized") or _from(module, "torch.nn.quantized"):
        return _torch_ao(name, module)
    if _from(module, "hqq"):
        return _hqq(name, module)
    if weight is not None and _from(weight, "bitsandbytes"):
        return _bitsandbytes(name, module, weight)
    if _from(module, "optimum.quanto", ("QModuleMixin",)):
        return _quanto(name, module, weight)
    if weight is not None and not _is_plain(weight) and _from(weight, "torchao"):
        return _torchao_tensor(name, module, weight)
    if _from(module, "torchao"):
        return _torchao_module(name, module, weight)
    if "weight_fake_quant" in module.__dict__.get("_modules", {}) and _from(module, "torch"):
        return _torch_ao_qat(name, module, weight)  # torch.ao.nn.qat and .intrinsic.qat layers
    # float layers: torch's own classes, transformers' Conv1D, and their subclasses in model code
    conv1d = _conv1d_type()
    if weight is not None and _is_plain(weight):
        if isinstance(module, _FLOAT_BASES) or (conv1d is not None and isinstance(module, conv1d)):
            if _trusted_float_subclass(module) and weight.dtype.is_floating_point:
                return _float_info(module, weight)
        elif _from(module, "bitsandbytes", ("StableEmbedding", "Embedding")) and weight.dtype.is_floating_point:
            return _float_info(module, weight)  # bitsandbytes' float embeddings (8-bit optimizer state only)
    why = _looks_weight_bearing(module)
    if why is None:
        return None
    raise _unknown(name, module, why)


def _trusted_float_subclass(module: torch.nn.Module) -> bool:
    """A float layer class we can count by its dtype: torch's, or a subclass defined in torch or
    in transformers' model code (not in its quantization integrations)."""
    for mod, _ in _mro_modules(module):
        if mod.startswith("transformers.integrations") or mod.startswith("transformers.quantizers"):
            return False
    first = type(module).__module__ or ""
    return first.startswith("torch.") or first.startswith("transformers.") or first == "torch"


def _bitsandbytes(name: str, module: torch.nn.Module, weight: torch.Tensor) -> LayerInfo:
    tname = type(weight).__name__
    kind = type(module).__name__
    if _from(weight, "bitsandbytes", ("Params4bit",)):
        qs = getattr(weight, "quant_state", None)
        if qs is None:  # not quantized yet (still on its way to a device): a float weight
            return LayerInfo(kind, "bitsandbytes", 4.0, None, None, weight.numel(), tensor_bytes(weight),
                             f"Params4bit (not yet quantized, {weight.dtype})")
        numel = math.prod(qs.shape)
        state = [qs.absmax, qs.code, getattr(qs, "offset", None)]
        s2 = getattr(qs, "state2", None) if getattr(qs, "nested", False) else None
        if s2 is not None:
            state += [s2.absmax, s2.code]
        size = weight.data.numel() * weight.data.element_size() + sum(tensor_bytes(t) for t in state)
        fmt = f"Params4bit({qs.quant_type}, blocksize {qs.blocksize}{', double-quant' if s2 is not None else ''}" + (
            ", CPU-packed" if getattr(qs, "packing_format_for_cpu", False) else "") + ")"
        return LayerInfo(kind, "bitsandbytes", 4.0, None, None, numel, size, fmt)
    if _from(weight, "bitsandbytes", ("Int8Params",)):
        state = getattr(module, "state", None)
        threshold = float(getattr(state, "threshold", 0.0) or 0.0)
        is_linear = isinstance(module, torch.nn.Linear)
        act = (8, "dynamic") if is_linear else (None, None)
        if weight.dtype == torch.int8:
            scb = getattr(weight, "SCB", None)
            if scb is None:  # the first forward moves the row scales to module.state
                scb = getattr(state, "SCB", None)
            size = weight.numel() + tensor_bytes(scb)
            fmt = "Int8Params(int8, row scales" + (f", fp16 outliers above {threshold:g}" if threshold and is_linear else "") + ")"
        else:  # has_fp16_weights: float storage, quantized on every call
            size = tensor_bytes(weight)
            fmt = f"Int8Params({str(weight.dtype).removeprefix('torch.')}, quantized per call)"
        return LayerInfo(kind, "bitsandbytes", 8.0, act[0], act[1], weight.numel(), size, fmt)
    raise FairQuantError(
        f"module {name!r} ({kind}) has a bitsandbytes weight of type {tname}: known are Params4bit and Int8Params"
    )


def _quanto(name: str, module: torch.nn.Module, weight: Any) -> LayerInfo | None:
    kind = type(module).__name__
    wq = getattr(module, "weight_qtype", None)
    aq = getattr(module, "activation_qtype", None)
    if weight is None or weight.ndim < 2:  # QLayerNorm and the like: output quantization only
        return None
    act_bits = int(_dtype_bits(aq)) if aq is not None else None
    act_mode = "static" if aq is not None else None
    if wq is None:  # activations only: the weight stays float
        info = _float_info(module, weight)
        return _replace(info, library="optimum-quanto", activation_bits=act_bits, activation_mode=act_mode)
    if _is_plain(weight):
        fmt, size = f"{str(weight.dtype).removeprefix('torch.')}, fake-quantized (not frozen)", tensor_bytes(weight)
    else:
        fmt, size = type(weight).__name__, tensor_bytes(weight)
    return LayerInfo(kind, "optimum-quanto", _dtype_bits(wq), act_bits, act_mode, weight.numel(), size, f"{fmt} [{wq}]")


# torchao tensor subclasses (torchao 0.18): class name → weight bits (None: read from attributes)
_TORCHAO_BITS = {
    "Int8Tensor": 8.0,
    "IntxUnpackedToInt8Tensor": None,  # target_dtype
    "IntxOpaqueTensor": None,  # bit_width
    "Int4Tensor": 4.0,
    "Int4PlainInt32Tensor": 4.0,
    "Int4PreshuffledTensor": 4.0,
    "Int4TilePackedTo4dTensor": 4.0,
    "Int4OpaqueTensor": 4.0,
    "Float8Tensor": 8.0,
    "NF4Tensor": 4.0,
}


def _torchao_tensor(name: str, module: torch.nn.Module, weight: torch.Tensor) -> LayerInfo:
    tname = type(weight).__name__
    kind = type(module).__name__
    if tname not in _TORCHAO_BITS:
        raise FairQuantError(
            f"module {name!r} ({kind}) holds a torchao weight of type {tname}, which hf_fairquant cannot read "
            f"(known: {', '.join(sorted(_TORCHAO_BITS))})"
        )
    bits = _TORCHAO_BITS[tname]
    if tname == "IntxUnpackedToInt8Tensor":
        bits = _dtype_bits(weight.target_dtype)
    elif tname == "IntxOpaqueTensor":
        bits = float(weight.bit_width)
    act_bits, act_mode = None, None
    if tname in ("Int8Tensor", "Float8Tensor") and getattr(weight, "act_quant_kwargs", None) is not None:
        act_bits = 8
        act_mode = "static" if getattr(weight, "act_quant_scale", None) is not None else "dynamic"
    elif tname == "IntxUnpackedToInt8Tensor" and getattr(weight, "activation_quantization", None) is not None:
        act_bits, act_mode = 8, "dynamic"
    elif tname == "Int4Tensor" and getattr(weight, "activation_dtype", None) not in (None, torch.bfloat16):
        act_bits, act_mode = int(_dtype_bits(weight.activation_dtype)), "dynamic"
    numel = math.prod(weight.shape)
    return LayerInfo(kind, "torchao", bits, act_bits, act_mode, numel, tensor_bytes(weight), tname)


def _torchao_module(name: str, module: torch.nn.Module, weight: Any) -> LayerInfo | None:
    """torchao's QAT layers (``FakeQuantizedLinear`` / ``FakeQuantizedEmbedding``): float weights,
    fake-quantized on every forward."""
    wfq = getattr(module, "weight_fake_quantizer", None)
    if weight is None or not _is_plain(weight):
        why = _looks_weight_bearing(module)
        if why is None:
            return None
        raise _unknown(name, module, why)
    if wfq is None:
        if _from(module, "torchao", ("FakeQuantizedLinear", "FakeQuantizedEmbedding")):
            return _float_info(module, weight)  # QAT layer with no weight quantizer
        raise _unknown(name, module, f"parameter 'weight' of shape {tuple(weight.shape)}")
    cfg = getattr(wfq, "config", None)
    dtype = getattr(cfg, "dtype", None)
    if dtype is None and type(cfg).__name__ == "Int4WeightFakeQuantizeConfig":
        dtype = "int4"
    bits = _dtype_bits(dtype)
    afq = getattr(module, "activation_fake_quantizer", None)
    act_bits = None
    if afq is not None:
        act_bits = int(_dtype_bits(getattr(getattr(afq, "config", None), "dtype", "int8")))
    fmt = f"{str(weight.dtype).removeprefix('torch.')}, fake-quantized (QAT)"
    return LayerInfo(type(module).__name__, "torchao", bits, act_bits, "dynamic" if act_bits else None,
                     weight.numel(), tensor_bytes(weight), fmt)


def _hqq(name: str, module: torch.nn.Module) -> LayerInfo | None:
    wq = getattr(module, "W_q", None)
    meta = getattr(module, "meta", None)
    if wq is None or not meta:
        why = _looks_weight_bearing(module)
        if why is None and not hasattr(module, "W_q"):
            return None
        raise FairQuantError(f"module {name!r} ({type(module).__name__}) is an uninitialised HQQ layer (no W_q/meta)")
    numel = math.prod(meta["shape"])
    state = sum(tensor_bytes(v) for v in _walk_tensors(meta))
    fmt = f"W_q {str(wq.dtype).removeprefix('torch.')} ({meta.get('packing', '?')}, group {meta.get('group_size')})"
    return LayerInfo(type(module).__name__, "hqq", float(meta["nbits"]), None, None, numel, tensor_bytes(wq) + state, fmt)


def _walk_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _walk_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk_tensors(v)


def _torch_ao(name: str, module: torch.nn.Module) -> LayerInfo | None:
    """``torch.ao.nn.quantized`` (static), ``.dynamic`` and ``.reference`` modules."""
    kind = type(module).__name__
    if kind.endswith("PackedParams"):  # the storage of the parent layer, counted there
        return None
    dynamic = _from(module, "torch.ao.nn.quantized.dynamic") or _from(module, "torch.nn.quantized.dynamic")
    reference = _from(module, "torch.ao.nn.quantized.reference")
    if reference:
        weight = _own_weight(module)
        if weight is None:
            return None
        wdtype = getattr(module, "weight_dtype", None)
        if wdtype is None:
            raise _unknown(name, module, "a reference-quantized weight with no weight_dtype")
        return LayerInfo(kind, "torch.ao", _dtype_bits(wdtype), None, None, weight.numel(), tensor_bytes(weight),
                         f"{str(weight.dtype).removeprefix('torch.')}, reference (simulated {wdtype})")
    get = getattr(module, "weight", None)
    if not callable(get) or isinstance(get, torch.Tensor):
        why = _looks_weight_bearing(module)
        if why is None:
            return None  # Quantize, DeQuantize, quantized activations and norms
        raise _unknown(name, module, why)
    q = get()
    if not isinstance(q, torch.Tensor) or q.ndim < 2:
        raise _unknown(name, module, "a weight() that is not a 2-d or larger tensor")
    is_embedding = "Embedding" in kind
    size = 0
    if q.is_quantized:
        bits = {torch.qint8: 8.0, torch.quint8: 8.0, torch.qint32: 32.0, torch.quint4x2: 4.0, torch.quint2x4: 2.0}[q.dtype]
        fmt = f"{str(q.dtype).removeprefix('torch.')} {str(q.qscheme()).removeprefix('torch.')}"
    else:  # dynamic float16 weights: packed as float16, unpacked by weight() as float32
        packed = getattr(getattr(module, "_packed_params", None), "dtype", q.dtype)
        stored = packed if isinstance(packed, torch.dtype) and packed.is_floating_point else q.dtype
        bits, fmt = _dtype_bits(stored), f"{str(stored).removeprefix('torch.')} (packed)"
        size = q.numel() * _dtype_bits(stored) // 8
    if is_embedding:
        act = (None, None)
    elif dynamic:
        act = (8, "dynamic") if q.is_quantized else (None, None)
    else:
        act = (8, "static")
    return LayerInfo(kind, "torch.ao", bits, act[0], act[1], q.numel(), size if not q.is_quantized else tensor_bytes(q), fmt)


def _torch_ao_qat(name: str, module: torch.nn.Module, weight: Any) -> LayerInfo | None:
    """``torch.ao.nn.qat`` layers: float weights fake-quantized by ``weight_fake_quant``."""
    wfq = getattr(module, "weight_fake_quant", None)
    if weight is None or wfq is None:
        why = _looks_weight_bearing(module)
        if why is None:
            return None
        raise _unknown(name, module, why)
    qmin, qmax = getattr(wfq, "quant_min", None), getattr(wfq, "quant_max", None)
    bits = math.log2(qmax - qmin + 1) if qmin is not None and qmax is not None else _dtype_bits(wfq.dtype)
    afq = getattr(module, "activation_post_process", None)
    act_bits = None
    if afq is not None and getattr(afq, "quant_min", None) is not None:
        act_bits = int(round(math.log2(afq.quant_max - afq.quant_min + 1)))
    return LayerInfo(type(module).__name__, "torch.ao", float(bits), act_bits, "static" if act_bits else None,
                     weight.numel(), tensor_bytes(weight), f"{str(weight.dtype).removeprefix('torch.')}, fake-quantized (QAT)")
