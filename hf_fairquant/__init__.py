"""hf_fairquant: audit, explain and mitigate how quantization skews a model across groups."""

from .audit import AuditReport, audit
from .groups import GroupSpec
from .quantization import (
    QuantRecipe,
    effective_bits,
    load_quantized,
    model_size_bytes,
    quantize,
    save_quantized,
)
from .training import FairQuantTrainer, FairQuantTrainingArguments

__version__ = "0.1.0"

__all__ = [
    "AuditReport",
    "FairQuantTrainer",
    "FairQuantTrainingArguments",
    "audit",
    "GroupSpec",
    "QuantRecipe",
    "effective_bits",
    "load_quantized",
    "model_size_bytes",
    "quantize",
    "save_quantized",
]
