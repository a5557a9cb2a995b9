"""ONNX Runtime: the deployed CPU artifact (real int8/int4 kernels), exported from a torch model.

``export_onnx(model, recipe, directory, calibration_dataset=..., group_spec=...)`` writes
``onnx/model.onnx`` (FP32) and ``onnx/model_quantized.onnx`` (the recipe compiled to ONNX Runtime
kernels); :class:`OrtModel` runs either like a torch classifier, so the audit takes it unchanged.
Names load on first use (``import hf_fairquant.quantization.onnx`` imports no onnxruntime).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "export": ["ExportConfig", "ExportResult", "export_onnx", "export_fp32", "onnx_file_name", "ONNX_DIR"],
    "compile": ["OnnxPlan", "compile_plan", "onnx_plan"],
    "runtime": ["OrtModel", "load_onnx"],
    "timing": ["throughput"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
