"""Quantization layer: recipes, the backend registry, calibration data, exact save/load.

Names are imported on first use (``from hf_fairquant.quantization import quantize`` loads
optimum-quanto only when a quanto model is built).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "api": ["FLOAT_SHARE_WARNING", "apply_plan", "calibrate", "check_not_quantized", "check_quantized", "describe_quantization", "effective_bits",
            "float_kinds", "float_weights", "freeze", "is_quantized", "layer_bits", "model_size_bytes", "quantize",
            "recipe_quantizer"],
    "backends": ["ArtifactFormat", "Backend", "DEFAULT_BACKEND", "PLAIN_LIBRARY_NAME", "Publishing", "Quantizer", "artifact_for_folder",
                 "available_backends", "check_pre_quantized", "get_artifact", "get_backend", "get_quantizer", "load_pre_quantized", "loaded_artifact_of",
                 "publishable_backends", "publishable_with_transformers", "quantizer_of", "quantizing_backends", "recipe_backends", "register_backend",
                 "transformers_native"],
    "calibration": ["calibration_batches"],
    "recipe": ["PRESETS", "SUPPORTED_ACTIVATION_BITS", "SUPPORTED_WEIGHT_BITS", "LayerQuant", "QuantRecipe",
               "RecipeLike", "check_unique_names", "is_conv1d", "is_preset", "parse_recipe", "parse_recipes", "quantizable_modules",
               "quantizable_types"],
    "serialization": ["load_metadata", "load_quantized", "load_quantized_checkpoint", "save_quantized"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

