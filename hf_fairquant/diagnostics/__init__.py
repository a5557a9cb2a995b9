"""Explain: the paper's chain from weight change to group accuracy, measured per layer and group.

``explain(model, "w4a8", dataset, "group")`` → :class:`Explanation`: (1) weight error and
activation drift per quantized layer and group, (2) logit variance, margin, confidence, loss and
accuracy per group, FP vs quantized, (3) gradient norms, (4) Hessian λ_max (Lanczos or power
iteration) and trace (Hutchinson) per group, (5) the bound ‖∇L_g‖·‖Δθ‖ + ½·λ_max·‖Δθ‖² next to
the measured excess loss. The curvature tools work on any ``hvp`` callable too.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "_config": ["PARAMETER_SETS", "ExplainConfig"],
    "_explain": ["explain"],
    "_explanation": ["BoundSummary", "Explanation", "GroupBound", "GroupCurvature", "GroupGradient", "GroupLogits",
                     "LayerDrift", "LogitSummary"],
    "_logits": ["logit_statistics"],
    "_sampling": ["DEFAULT_MAX_EXAMPLES"],
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
