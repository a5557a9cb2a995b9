"""Quantization layer: recipes, the backend registry, calibration data, exact save/load.

Names are imported on first use (``from hf_fairquant.quantization import quantize`` loads
optimum-quanto only when a quanto model is built).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "api": ["apply_plan", "calibrate", "check_not_quantized", "effective_bits", "freeze", "is_quantized", "layer_bits",
            "model_size_bytes", "quantize", "recipe_quantizer"],
    "backends": ["ArtifactFormat", "Backend", "DEFAULT_BACKEND", "Publishing", "Quantizer", "artifact_for_folder",
                 "available_backends", "get_artifact", "get_backend", "get_quantizer", "loaded_artifact_of",
                 "publishable_backends", "publishable_with_transformers", "quantizer_of", "quantizing_backends", "register_backend",
                 "transformers_native"],
    "calibration": ["calibration_batches"],
    "recipe": ["PRESETS", "SUPPORTED_ACTIVATION_BITS", "SUPPORTED_WEIGHT_BITS", "LayerQuant", "QuantRecipe",
               "RecipeLike", "check_unique_names", "parse_recipes", "quantizable_modules"],
    "serialization": ["load_metadata", "load_quantized", "save_quantized"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

