"""Quantization layer: recipes, the backend registry, calibration data, exact save/load.

Names are imported on first use (``from hf_fairquant.quantization import quantize`` loads
optimum-quanto only when a quanto model is built).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "api": ["apply_plan", "calibrate", "effective_bits", "freeze", "is_quantized", "layer_bits",
            "model_size_bytes", "quantize", "recipe_backend", "DEFAULT_BACKEND"],
    "backends": ["QuantBackend", "available_backends", "backend_of", "get_backend", "register_backend"],
    "calibration": ["calibration_batches"],
    "recipe": ["PRESETS", "SUPPORTED_ACTIVATION_BITS", "SUPPORTED_WEIGHT_BITS", "LayerQuant", "QuantRecipe",
               "RecipeLike", "check_unique_names", "parse_recipes", "quantizable_modules"],
    "serialization": ["load_metadata", "load_quantized", "save_quantized"],
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
