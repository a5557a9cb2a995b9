"""Export a float torch classifier to ``onnx/model.onnx`` and its recipe to ``onnx/model_quantized.onnx``.

The FP32 graph comes from ``torch.onnx.export`` with the legacy TorchScript exporter
(``dynamo=False``): on torch 2.13 / transformers 5.24 both exporters give logits within 2e-7 of
torch for the tiny ResNet, ViT and DistilBERT, but the legacy one took 0.2 s per model where the
dynamo one took 2.4–3.7 s, and it names every node after its module's scope, which is how the
recipe's per-module bits reach the nodes (:mod:`.compile`). The batch axis (and a text model's
sequence axis) is dynamic. The ``onnx/`` folder is the layout the Hub uses for ONNX weights.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..._atomic import atomic_files
from ...batching import iterate_batches
from ...errors import FairQuantError
from ...groups import GroupSpec
from ..calibration import calibration_batches
from ..recipe import QuantRecipe, RecipeLike
from .compile import KERNELS, compile_plan, onnx_plan

ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
METADATA_KEY = "hf_fairquant"
OPSET = 17


def onnx_file_name(recipe: RecipeLike | None, primary: bool = True) -> str:
    """``model.onnx`` for FP32, ``model_quantized.onnx`` for the primary recipe, else
    ``model_<recipe>.onnx``."""
    if recipe is None:
        return FP32_FILE
    return QUANTIZED_FILE if primary else f"model_{str(QuantRecipe.parse(recipe)).lower()}.onnx"


@dataclass
class ExportConfig:
    """Which recipes a run exports to ONNX Runtime (YAML section ``export``, ``hf-fairquant export``).

    The first recipe is written as ``onnx/model_quantized.onnx``, the others as
    ``onnx/model_<recipe>.onnx``; each must be an audited recipe, so the deployed model is compared
    with its simulation. Calibration uses the audit's ``calibration_size`` and ``seed``.
    """

    enabled: bool = field(default=True, metadata={"help": "export the FP model and the recipes to ONNX Runtime"})
    recipes: list[str] = field(
        default_factory=lambda: ["w8a8"],
        metadata={"help": "recipes to export (w8a8: static int8, w8: dynamic int8, w4: MatMulNBits on Linear)"},
    )
    block_size: int = field(default=128, metadata={"help": "MatMulNBits block size for 4-bit weights (power of 2, ≥ 16)"})
    speed_batch_size: int = field(default=32, metadata={"help": "batch size of the measured speed-up vs torch FP32"})
    speed_batches: int = field(default=4, metadata={"help": "test batches the speed-up is measured on (0: skip)"})

    def __post_init__(self) -> None:
        from ..._config import check_positive_int, split_commas

        self.recipes = split_commas(self.recipes)
        for r in self.recipes:
            QuantRecipe.parse(r)  # an unknown preset fails here
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 16 \
                or self.block_size & (self.block_size - 1):
            raise FairQuantError(f"export block_size must be a power of 2 ≥ 16 (e.g. 32, 128), got {self.block_size!r}")
        check_positive_int("export speed_batch_size", self.speed_batch_size)
        check_positive_int("export speed_batches", self.speed_batches, allow_zero=True)


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote: paths, the recipe, each module's kernel, FP32 parity."""

    fp32_path: Path
    quantized_path: Path | None
    recipe: dict[str, Any] | None
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    fp32_max_abs_diff: float = 0.0


def export_fp32(model: torch.nn.Module, path: str | Path, example_inputs: Mapping[str, torch.Tensor]) -> float:
    """``torch.onnx.export`` of ``model`` (legacy exporter, dynamic batch axis) to ``path``;
    returns the largest |logit difference| between onnxruntime and torch on ``example_inputs``."""
    import onnxruntime as ort

    names = list(example_inputs)
    axes = {n: ({0: "batch", 1: "sequence"} if v.dim() == 2 and not v.is_floating_point() else {0: "batch"})
            for n, v in example_inputs.items()}
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the legacy exporter's deprecation notice
        torch.onnx.export(
            model, (), str(path), kwargs=dict(example_inputs), input_names=names, output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )
    with torch.no_grad():
        ref = model(**example_inputs).logits.float().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {k: v.numpy() for k, v in example_inputs.items()})[0]
    return float(np.abs(got - ref).max())


def export_onnx(
    model: torch.nn.Module,
    recipe: RecipeLike | None,
    directory: str | Path,
    calibration_dataset: Any,
    group_spec: GroupSpec | None = None,
    *,
    calibration_size: int = 512,
    batch_size: int = 64,
    seed: int = 0,
    block_size: int = 128,
    file_name: str | None = None,
    write_fp32: bool = True,
    data_collator: Any = None,
    processing_class: Any = None,
) -> ExportResult:
    """Write ``directory/onnx/model.onnx`` (FP32) and, for a ``recipe``, its ONNX Runtime int8/int4
    model (``model_quantized.onnx`` unless ``file_name``).

    ``model`` is the float model (not modified). ``calibration_dataset`` (preprocessed, the model's
    input columns) gives the example batch for tracing and, for w8a8 modules, the calibration
    sample: ``calibration_size`` rows stratified by ``group_spec`` with ``seed`` — the same sample
    :func:`~hf_fairquant.audit` calibrates the simulation on. A recipe with bits ONNX Runtime cannot
    run is refused before anything is written. ``data_collator`` / ``processing_class`` batch the
    calibration data as the Trainer would (dynamic padding of unpadded text, an image processor for
    a PIL column).
    """
    from ..api import is_quantized

    if is_quantized(model):
        raise FairQuantError(
            f"export_onnx takes the full-precision model ({type(model).__name__} is already quantized): "
            "the recipe is compiled to ONNX Runtime kernels from the float weights"
        )
    if calibration_dataset is None:
        raise FairQuantError("export_onnx needs a calibration_dataset (example inputs for tracing, calibration for w8a8)")
    parsed = QuantRecipe.parse(recipe) if recipe is not None else None
    plan = onnx_plan(model, parsed.plan(model)) if parsed is not None else None  # refusals: before any work
    example = next(iterate_batches(model, calibration_dataset, min(batch_size, 8), data_collator, processing_class))
    target = Path(directory) / ONNX_DIR
    with atomic_files(target) as tmp:
        fp32_tmp = tmp / FP32_FILE
        diff = export_fp32(model, fp32_tmp, example)
        _set_metadata(fp32_tmp, {"recipe": None})
        result = ExportResult(target / FP32_FILE, None, None, fp32_max_abs_diff=diff)
        if plan is not None:
            batches = (
                calibration_batches(model, calibration_dataset, calibration_size, group_spec, batch_size, seed,
                                    data_collator=data_collator, processing_class=processing_class)
                if plan.modules("static") else []
            )
            name = file_name or QUANTIZED_FILE
            nodes = compile_plan(fp32_tmp, tmp / name, plan, batches, block_size=block_size)
            layers = {
                m: {"bits": str(plan.bits[m]) if plan.bits[m] else None,
                    "kernel": KERNELS[k] if k and m in nodes else None,
                    "node": nodes.get(m), "numel": plan.numel[m]}
                for m, k in plan.kernels.items()
            }
            meta = {"recipe": parsed.to_dict(), "layers": layers, "calibration_size": sum(len(next(iter(b.values()))) for b in batches)}
            _set_metadata(tmp / name, meta)
            result = ExportResult(result.fp32_path, target / name, parsed.to_dict(), layers, diff)
        if not write_fp32:
            fp32_tmp.unlink()
    return result


def _set_metadata(path: Path, data: dict[str, Any]) -> None:
    """Store ``data`` as JSON in the ONNX file's metadata (read back by :class:`~.runtime.OrtModel`)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(data)
    onnx.save(proto, str(path))
