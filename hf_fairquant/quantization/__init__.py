"""Quantization layer: recipes, the optimum-quanto backend, exact save/load."""

from .allocation import Allocation, LayerChoice, allocate_bits, solve_allocation
from .backend import (
    apply_plan,
    calibrate,
    calibration_batches,
    effective_bits,
    freeze,
    is_quantized,
    layer_bits,
    model_size_bytes,
    quantize,
)
from .recipe import (
    PRESETS,
    SUPPORTED_ACTIVATION_BITS,
    SUPPORTED_WEIGHT_BITS,
    LayerQuant,
    QuantRecipe,
    RecipeLike,
    parse_recipes,
    quantizable_modules,
)
from .serialization import load_metadata, load_quantized, save_quantized

__all__ = [
    "Allocation",
    "LayerChoice",
    "PRESETS",
    "SUPPORTED_ACTIVATION_BITS",
    "SUPPORTED_WEIGHT_BITS",
    "LayerQuant",
    "QuantRecipe",
    "RecipeLike",
    "allocate_bits",
    "apply_plan",
    "calibrate",
    "calibration_batches",
    "effective_bits",
    "freeze",
    "is_quantized",
    "layer_bits",
    "load_metadata",
    "load_quantized",
    "model_size_bytes",
    "parse_recipes",
    "quantizable_modules",
    "quantize",
    "save_quantized",
    "solve_allocation",
]
