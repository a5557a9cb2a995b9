"""hf_fairquant: audit, explain and mitigate how quantization skews a model across groups.

The public names load on first use (the huggingface_hub pattern), so ``import hf_fairquant`` is
quick and loads neither transformers nor a quantization library until they are needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from .quantization.backends import quiet_library_loggers

__version__ = "0.1.0"

_EXPORTS = {
    "allocation": ["Allocation", "allocate_bits"],
    "audit": ["AuditReport", "audit"],
    "diagnostics": ["Explanation", "explain"],
    "errors": ["FairQuantError"],
    "groups": ["GroupSpec"],
    "inputs": ["GroupedInputs"],
    "quantization": ["QuantRecipe", "effective_bits", "load_quantized", "model_size_bytes", "quantize",
                     "save_quantized"],
    "quantization.onnx": ["export_onnx", "load_onnx"],
    "results": ["RunResult"],
    "samples": ["compare_samples"],
    "training": ["FairQuantTrainer", "FairQuantTrainingArguments"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
quiet_library_loggers()

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .allocation import Allocation, allocate_bits
    from .audit import AuditReport, audit
    from .diagnostics import Explanation, explain
    from .errors import FairQuantError
    from .groups import GroupSpec
    from .inputs import GroupedInputs
    from .quantization import QuantRecipe, effective_bits, load_quantized, model_size_bytes, quantize, save_quantized
    from .quantization.onnx import export_onnx, load_onnx
    from .results import RunResult
    from .samples import compare_samples
    from .training import FairQuantTrainer, FairQuantTrainingArguments

