"""Explain: the paper's chain from weight change to group accuracy, measured per layer and group.

``explain(model, "w4a8", dataset, "group")`` → :class:`Explanation`: (1) weight error and
activation drift per quantized layer and group, (2) logit variance, margin, confidence, loss and
accuracy per group, FP vs quantized, (3) gradient norms, (4) Hessian λ_max (Lanczos or power
iteration) and trace (Hutchinson) per group, (5) the bound ‖∇L_g‖·‖Δθ‖ + ½·λ_max·‖Δθ‖² next to
the measured excess loss. The curvature tools work on any ``hvp`` callable too.
"""

from ..curvature import EigenEstimate, GroupObjective, TraceEstimate, hutchinson_trace, top_eigenvalue
from ._config import PARAMETER_SETS, ExplainConfig
from ._explain import explain
from ._explanation import (
    BoundSummary,
    Explanation,
    GroupBound,
    GroupCurvature,
    GroupGradient,
    GroupLogits,
    LayerDrift,
    LogitSummary,
)
from ._logits import logit_statistics
from ._sampling import DEFAULT_MAX_EXAMPLES

__all__ = [
    "BoundSummary",
    "DEFAULT_MAX_EXAMPLES",
    "EigenEstimate",
    "ExplainConfig",
    "Explanation",
    "GroupBound",
    "GroupCurvature",
    "GroupGradient",
    "GroupLogits",
    "GroupObjective",
    "LayerDrift",
    "LogitSummary",
    "PARAMETER_SETS",
    "TraceEstimate",
    "explain",
    "hutchinson_trace",
    "logit_statistics",
    "top_eigenvalue",
]
