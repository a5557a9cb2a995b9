"""hf_fairquant: audit, explain and mitigate how quantization skews a model across groups."""

from .audit import AuditReport, audit
from .diagnostics import Explanation, explain
from .groups import GroupSpec
from .quantization import (
    Allocation,
    QuantRecipe,
    allocate_bits,
    effective_bits,
    load_quantized,
    model_size_bytes,
    quantize,
    save_quantized,
)
from .training import FairQuantTrainer, FairQuantTrainingArguments

__version__ = "0.1.0"

__all__ = [
    "Allocation",
    "AuditReport",
    "Explanation",
    "FairQuantTrainer",
    "FairQuantTrainingArguments",
    "allocate_bits",
    "audit",
    "GroupSpec",
    "QuantRecipe",
    "effective_bits",
    "explain",
    "load_quantized",
    "model_size_bytes",
    "quantize",
    "save_quantized",
]
