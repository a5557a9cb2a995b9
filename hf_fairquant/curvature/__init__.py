"""Curvature primitives (a low floor): a group's loss as a function of parameters, its
Hessian-vector products, λ_max (Lanczos / power iteration) and the trace (Hutchinson).

Both :mod:`hf_fairquant.diagnostics` (the explain chain) and :mod:`hf_fairquant.allocation`
(Hessian sensitivity) build on these; this package knows nothing of either.
"""

from ._estimators import METHODS, EigenEstimate, TraceEstimate, check_positive, hutchinson_trace, top_eigenvalue
from ._objective import Batch, GroupObjective, differentiable, evaluating

__all__ = [
    "Batch",
    "EigenEstimate",
    "GroupObjective",
    "METHODS",
    "TraceEstimate",
    "check_positive",
    "differentiable",
    "evaluating",
    "hutchinson_trace",
    "top_eigenvalue",
]
