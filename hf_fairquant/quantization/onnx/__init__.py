"""ONNX Runtime: the deployed CPU artifact (real int8/int4 kernels), exported from a torch model.

``export_onnx(model, recipe, directory, calibration_dataset=..., group_spec=...)`` writes
``onnx/model.onnx`` (FP32) and ``onnx/model_quantized.onnx`` (the recipe compiled to ONNX Runtime
kernels); :class:`OrtModel` runs either like a torch classifier, so the audit takes it unchanged.
Names load on first use (``import hf_fairquant.quantization.onnx`` imports no onnxruntime).
"""

from __future__ import annotations

from ..._lazy import lazy_exports

_EXPORTS = {
    "export": ["ExportConfig", "ExportResult", "export_onnx", "export_fp32", "onnx_file_name", "ONNX_DIR"],
    "compile": ["OnnxPlan", "compile_plan", "onnx_plan"],
    "runtime": ["OrtModel", "load_onnx"],
    "timing": ["throughput"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
