"""A QuantRecipe's plan compiled to ONNX Runtime kernels, node by node.

Each planned Conv2d/Linear becomes one ONNX node (its name carries the module's scope:
``/vit/layers.0/attention/q_proj/MatMul`` ↔ ``vit.layers.0.attention.q_proj``) and gets the kernel
its bits have on a CPU:

=========  ==================================================================================
w8a8       static QDQ int8 (``quantize_static``): int8 weights per channel, uint8 activations
           with ranges calibrated on the audit's group-stratified sample (Conv, MatMul, Gemm)
w8         dynamic int8 (``quantize_dynamic``): int8 weights, activations quantized per batch
w4 / w4a8  ``MatMulNBits`` 4-bit blocks (Linear only); w4a8 computes in int8 (accuracy_level 4,
           activations quantized per block at run time, not with calibrated ranges)
excluded   float
=========  ==================================================================================

Only the inputs of these weight-bearing nodes get quantized activations: attention score MatMuls
(both operands activations), Softmax, LayerNorm, GELU and residual Adds stay float — quantizing
them made a random ViT agree with FP on 59 % of argmaxes (the issue's measurement). 2-bit weights
and 4-bit Conv have no ONNX Runtime CPU kernel: :func:`onnx_plan` refuses them before any work.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from ...errors import UnsupportedByBackendError
from ..recipe import LayerQuant, is_conv1d

#: ONNX op types a Conv2d / Linear exports to (Linear with a bias on a 2-d input: Gemm).
WEIGHT_OPS = ("Conv", "MatMul", "Gemm")
KERNELS = {"static": "static QDQ int8", "dynamic": "dynamic int8", "nbits": "MatMulNBits int4"}


@dataclass(frozen=True)
class OnnxPlan:
    """``{module name: kernel}`` ("static", "dynamic", "nbits" or None = float), with the bits."""

    kernels: dict[str, str | None]
    bits: dict[str, LayerQuant | None]
    numel: dict[str, int] = field(default_factory=dict)

    def modules(self, kernel: str) -> list[str]:
        return [n for n, k in self.kernels.items() if k == kernel]


def onnx_plan(model: torch.nn.Module, plan: Mapping[str, LayerQuant | None]) -> OnnxPlan:
    """Pick each module's ONNX Runtime kernel; raise :class:`UnsupportedByBackendError` naming
    every module whose bits have none (2-bit weights, 4-bit Conv) — before any export."""
    kernels: dict[str, str | None] = {}
    refused: dict[str, list[str]] = {}
    for name, quant in plan.items():
        module = model.get_submodule(name)
        if quant is not None and is_conv1d(module):
            refused.setdefault("transformers Conv1D (exported as Gemm/addmm, not mapped to a layer here)", []).append(name)
            continue
        if quant is None:
            kernels[name] = None
        elif quant.weight_bits == 8:
            kernels[name] = "static" if quant.activation_bits else "dynamic"
        elif quant.weight_bits == 4 and isinstance(module, torch.nn.Linear):
            kernels[name] = "nbits"
        else:
            why = "2-bit weights" if quant.weight_bits == 2 else f"{quant.weight_bits}-bit {type(module).__name__}"
            refused.setdefault(why, []).append(name)
    if refused:
        listing = "; ".join(f"{why}: {', '.join(_preview(names))}" for why, names in refused.items())
        raise UnsupportedByBackendError(
            f"ONNX Runtime has no CPU kernel for {listing}. It runs w8a8 (static int8), w8 (dynamic "
            "int8) and w4/w4a8 on Linear (MatMulNBits): exclude these modules or override them to one of "
            "those (e.g. overrides {'<pattern>': 'w8'}); the quanto backend simulates 2-bit weights and 4-bit Conv"
        )
    numel = {n: model.get_submodule(n).weight.numel() for n in plan}
    return OnnxPlan(kernels, dict(plan), numel)


def check_recipe_bits(recipe) -> None:
    """What can be refused without a model: 2-bit weights anywhere in the recipe (its default or an
    override pattern) have no ONNX Runtime kernel."""
    where = (["the default bits"] if recipe.weight_bits == 2 else []) + [
        f"override {p!r}" for p, q in recipe.overrides if q.weight_bits == 2
    ]
    if where:
        raise UnsupportedByBackendError(
            f"ONNX Runtime has no CPU kernel for 2-bit weights ({', '.join(where)} of recipe {recipe}); it runs "
            "w8a8 (static int8), w8 (dynamic int8) and w4/w4a8 on Linear (MatMulNBits); the quanto backend simulates 2-bit"
        )


def module_of_node(node_name: str, module_names: Iterable[str]) -> str | None:
    """The torch module an exported node belongs to, or None.

    The legacy exporter names a node after its scope: one component per *called* module, each
    the module's path below the previous one, so ``/vit/layers.0/attention/q_proj/MatMul`` is
    ``vit.layers.0.attention.q_proj`` but a Sequential's child repeats its parent
    (``/classifier/classifier.1/Gemm`` is ``classifier.1``). Each component is resolved against
    ``module_names`` (and their prefixes)."""
    known = {".".join(n.split(".")[: i + 1]) for n in module_names for i in range(n.count(".") + 1)}
    current = ""
    for component in node_name.strip("/").split("/")[:-1]:
        parts = component.split(".")
        for k in range(len(parts)):
            candidate = ".".join(filter(None, [current, *parts[k:]]))
            if candidate in known:
                current = candidate
                break
        else:
            return None
    return current if current in set(module_names) else None


def weight_nodes(model_proto, module_names: Iterable[str]) -> dict[str, str]:
    """``{module name: node name}`` for the Conv/MatMul/Gemm nodes whose second input is a weight
    (an initializer) — the attention score MatMuls have two activations and are not listed."""
    names = list(module_names)
    inits = {i.name for i in model_proto.graph.initializer}
    found: dict[str, str] = {}
    for node in model_proto.graph.node:
        if node.op_type in WEIGHT_OPS and len(node.input) > 1 and node.input[1] in inits:
            module = module_of_node(node.name, names)
            if module is not None:
                found.setdefault(module, node.name)
    return found


class _Batches:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over torch input batches."""

    def __init__(self, batches: Iterable[Mapping[str, torch.Tensor]], input_names: list[str]):
        self._feeds = [{k: b[k].numpy() for k in input_names} for b in batches]
        self._it = iter(self._feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._feeds)


def compile_plan(
    fp32_path: str | Path,
    out_path: str | Path,
    plan: OnnxPlan,
    calibration_batches: Iterable[Mapping[str, torch.Tensor]] = (),
    *,
    block_size: int = 128,
) -> dict[str, str]:
    """Write ``out_path``: the FP32 model at ``fp32_path`` with each planned node quantized.
    Returns ``{module name: node name}`` of the nodes compiled (modules absent from the graph,
    e.g. unused heads, stay out)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    fp32 = onnx.load(str(fp32_path))
    nodes = weight_nodes(fp32, plan.kernels)
    used = {m: nodes[m] for m, k in plan.kernels.items() if k is not None and m in nodes}
    if not used:
        raise UnsupportedByBackendError(
            f"none of the planned modules is a weight node of the exported graph; graph nodes: {sorted(nodes)[:12]}"
        )
    input_names = [i.name for i in fp32.graph.input]
    with tempfile.TemporaryDirectory(prefix="hf_fairquant_onnx_") as tmp:
        # ORT's quantizers split a Gemm into Gemm_MatMul + Gemm_Add before matching node names (and
        # MatMulNBits takes only MatMul): split the planned Gemm nodes first, so names stay put
        for module, node in list(used.items()):
            used[module] = _gemm_to_matmul(fp32, node)
        current = f"{tmp}/prepared.onnx"
        onnx.save(fp32, current)
        static = [used[m] for m in plan.modules("static") if m in used]
        if static:
            reader = _Batches(calibration_batches, input_names)
            if not reader._feeds:
                raise UnsupportedByBackendError("w8a8 (static int8) needs calibration batches: pass a calibration_dataset")
            quantize_static(
                current, f"{tmp}/static.onnx", reader, quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(WEIGHT_OPS), nodes_to_quantize=static, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"WeightSymmetric": True, "MatMulConstBOnly": True},
            )
            current = f"{tmp}/static.onnx"
        # each pass may rename nodes (a Gemm becomes Gemm_MatMul + Gemm_Add): look them up again
        dynamic = [m for m in plan.modules("dynamic") if m in used]
        if dynamic:
            renamed = weight_nodes(onnx.load(current), dynamic)
            quantize_dynamic(
                current, f"{tmp}/dynamic.onnx", op_types_to_quantize=list(WEIGHT_OPS),
                nodes_to_quantize=[renamed[m] for m in dynamic], per_channel=False, weight_type=QuantType.QInt8,
                extra_options={"MatMulConstBOnly": True},
            )
            current = f"{tmp}/dynamic.onnx"
        model = onnx.load(current)
        nbits = [m for m in plan.modules("nbits") if m in used]
        if nbits:
            renamed = weight_nodes(model, nbits)
            model = _nbits(model, [renamed[m] for m in nbits], any(plan.bits[m].activation_bits for m in nbits), block_size)
        onnx.save(model, str(out_path))
    return used


def _nbits(model_proto, node_names: list[str], int8_compute: bool, block_size: int):
    """MatMulNBits 4-bit blocks for the MatMul nodes ``node_names``."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        model_proto, bits=4, block_size=block_size, is_symmetric=True,
        accuracy_level=4 if int8_compute else None,
        # nodes_to_include only adds to op_types_to_quantize: exclude every other MatMul instead
        nodes_to_exclude=[n.name for n in model_proto.graph.node if n.name not in set(node_names)],
    )
    quantizer.process()
    return quantizer.model.model


def _gemm_to_matmul(model_proto, node_name: str) -> str:
    """Rewrite the Gemm ``node_name`` (alpha = beta = 1) as MatMul(x, Wᵀ) [+ Add(bias)] in place;
    returns the MatMul's name (a MatMul node is returned as it is)."""
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    index, node = next((i, n) for i, n in enumerate(graph.node) if n.name == node_name)
    if node.op_type != "Gemm":
        return node_name
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
        return node_name  # pragma: no cover - torch Linear exports alpha = beta = 1, transA = 0
    inits = {i.name: i for i in graph.initializer}
    weight = numpy_helper.to_array(inits[node.input[1]])
    if attrs.get("transB", 0):
        weight = weight.T
    new_weight = numpy_helper.from_array(np.ascontiguousarray(weight), node.input[1] + "_matmul")
    graph.initializer.append(new_weight)
    matmul_name = node_name.rsplit("/", 1)[0] + "/MatMul"
    has_bias = len(node.input) > 2 and node.input[2]
    mm_out = node.output[0] + "_matmul" if has_bias else node.output[0]
    new = [helper.make_node("MatMul", [node.input[0], new_weight.name], [mm_out], name=matmul_name)]
    if has_bias:
        new.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=node_name.rsplit("/", 1)[0] + "/Add"))
    del graph.node[index]
    for offset, n in enumerate(new):
        graph.node.insert(index + offset, n)
    if not any(node.input[1] in n.input for n in graph.node):  # the transposed copy replaces it
        graph.initializer.remove(inits[node.input[1]])
    return matmul_name


def _preview(names: list[str], limit: int = 8) -> list[str]:
    return names[:limit] + ([f"… ({len(names)} in all)"] if len(names) > limit else [])
