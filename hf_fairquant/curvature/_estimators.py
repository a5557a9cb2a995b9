"""Curvature from Hessian-vector products: top eigenvalue (Lanczos or power iteration), trace.

Everything here sees the Hessian only through ``hvp(v) -> H v`` on flat torch vectors, so it
works for any loss (see :class:`~._objective.GroupObjective`) and is testable against an
explicit matrix. Lanczos is the plain three-term recurrence with reorthogonalisation against the
last ``lanczos_vectors`` vectors, stopped by a hard budget of products: each step costs exactly
one product, the Ritz residual ``|β_k s_k|`` of the top Ritz pair is checked after every step
and reported, so an estimate that ran out of budget says "not converged" and by how much
(ARPACK's ``eigsh``, used before, counts restarts, not products, and ran on for minutes at
ViT-B size). Power iteration is the method PyHessian uses; the trace is Hutchinson's
estimator with Rademacher probes and its standard error.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import FairQuantError

HVP = Callable[[torch.Tensor], torch.Tensor]
METHODS = ("lanczos", "power")


@dataclass(frozen=True)
class EigenEstimate:
    """λ_max and what it cost: Hessian-vector products, whether the stopping rule was met, and
    the achieved relative residual (Lanczos: ``‖Hy − θy‖/|θ|`` of the Ritz pair; power: the last
    relative change of the Rayleigh quotient; 0 for the exact dense solve)."""

    value: float
    hvps: int
    converged: bool
    method: str
    residual: float | None = None


@dataclass(frozen=True)
class TraceEstimate:
    """tr(H) by Hutchinson: the mean of vᵀHv over ``probes``; ``stderr`` is None for one probe
    and 0 when ``exact`` (probes ≥ dimension: the basis vectors were used instead)."""

    value: float
    stderr: float | None
    probes: int
    hvps: int
    exact: bool


class _Counted:
    """Wrap ``hvp`` to count calls and move vectors between numpy (float64) and torch."""

    def __init__(self, hvp: HVP, dtype: torch.dtype):
        self.hvp, self.dtype, self.calls = hvp, dtype, 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.hvp(v.to(self.dtype)).detach().cpu()  # the solvers' vectors live on the CPU

    def numpy(self, x: np.ndarray) -> np.ndarray:
        out = self(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).ravel()))
        return out.to(torch.float64).numpy()


def check_positive(**values: float) -> None:
    """Raise a ValueError naming every argument that is not > 0."""
    bad = {k: v for k, v in values.items() if not (isinstance(v, (int, float)) and v > 0)}
    if bad:
        raise FairQuantError(", ".join(f"{k} must be positive, got {v!r}" for k, v in bad.items()))


def top_eigenvalue(
    hvp: HVP,
    dim: int,
    *,
    method: str = "lanczos",
    tol: float = 1e-3,
    max_iterations: int = 100,
    lanczos_vectors: int = 8,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> EigenEstimate:
    """Largest eigenvalue of the symmetric operator ``hvp`` of size ``dim``.

    ``max_iterations`` is a hard budget of Hessian-vector products for both methods: the
    estimate returned when it runs out has ``converged=False`` and its achieved ``residual``.
    ``lanczos``: the largest *algebraic* eigenvalue (top Ritz value); stops when the relative
    Ritz residual ``|β_k s_k|/|θ|`` ≤ ``tol``; ``lanczos_vectors`` recent Krylov vectors are kept
    for reorthogonalisation (memory: that many vectors of ``dim``). For ``dim <= lanczos_vectors``
    the matrix is built from ``dim`` products and solved exactly. ``power``: PyHessian's power
    iteration — the eigenvalue of largest *magnitude*; stops when successive Rayleigh quotients
    differ by < ``tol`` relative.
    """
    if method not in METHODS:
        raise FairQuantError(f"unknown eigenvalue method {method!r}; allowed: {list(METHODS)}")
    check_positive(tol=tol, max_iterations=max_iterations, lanczos_vectors=lanczos_vectors, dim=dim)
    counted = _Counted(hvp, dtype)
    rng = np.random.default_rng(seed)
    if method == "power":
        value, converged, residual = _power_iteration(counted, dim, tol, max_iterations, rng, dtype)
    elif dim <= max(lanczos_vectors, 2) and dim <= max_iterations:
        dense = np.stack([counted.numpy(np.eye(dim)[i]) for i in range(dim)], axis=1)
        value, converged, residual = float(np.linalg.eigvalsh((dense + dense.T) / 2)[-1]), True, 0.0
    else:
        value, converged, residual = _lanczos(counted, dim, tol, max_iterations, lanczos_vectors, rng, dtype)
    return EigenEstimate(float(value), counted.calls, converged, method, residual)


#: Lanczos vectors are float64 unless the kept ones would need more than this many bytes.
_FLOAT64_BYTES = 1 << 30


def _lanczos(
    counted: _Counted, dim: int, tol: float, budget: int, window: int, rng, dtype: torch.dtype
) -> tuple[float, bool, float]:
    """Budgeted Lanczos: at most ``budget`` products; (top Ritz value, converged, relative residual)."""
    work = torch.float64 if dim * 8 * (window + 2) <= _FLOAT64_BYTES else dtype
    q = torch.from_numpy(rng.standard_normal(dim)).to(work)
    q /= q.norm()
    kept: deque[torch.Tensor] = deque([q], maxlen=window)
    alphas: list[float] = []
    betas: list[float] = []
    previous, theta, residual = None, 0.0, math.inf
    for _ in range(min(budget, dim)):
        w = counted(q.to(dtype)).to(work)
        alpha = float(torch.dot(w, q))
        w -= alpha * q
        if previous is not None:
            w -= betas[-1] * previous
        for v in kept:  # local reorthogonalisation (one classical Gram–Schmidt sweep)
            w -= torch.dot(w, v) * v
        beta = float(w.norm())
        alphas.append(alpha)
        tridiagonal = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        values, vectors = np.linalg.eigh(tridiagonal)
        theta = float(values[-1])
        scale = max(abs(theta), np.finfo(float).tiny)
        residual = abs(beta * vectors[-1, -1]) / scale
        if residual <= tol or beta <= 1e-12 * scale:  # converged, or an invariant subspace
            return theta, True, residual
        betas.append(beta)
        previous, q = q, w / beta
        kept.append(q)
    return theta, False, residual


def _power_iteration(counted: _Counted, dim: int, tol: float, max_iterations: int, rng, dtype) -> tuple[float, bool, float]:
    v = torch.from_numpy(rng.standard_normal(dim)).to(dtype)
    v /= v.norm()
    value, change = None, math.inf
    for _ in range(max_iterations):
        hv = counted(v)
        estimate = float(torch.dot(hv.to(torch.float64), v.to(torch.float64)))
        norm = hv.norm()
        if norm == 0:
            return 0.0, True, 0.0
        v = hv / norm
        if value is not None:
            change = abs(estimate - value) / (abs(value) + 1e-6)
            if change < tol:
                return estimate, True, change
        value = estimate
    return float(value), False, change


def hutchinson_trace(
    hvp: HVP, dim: int, *, probes: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32
) -> TraceEstimate:
    """Hutchinson's estimate of tr(H): the mean of vᵀHv over i.i.d. Rademacher probes v.

    The standard error is the sample standard deviation of vᵀHv over √probes. When
    ``probes >= dim`` the exact trace Σᵢ eᵢᵀHeᵢ is cheaper (``dim`` products): it is used, with
    standard error 0.
    """
    check_positive(probes=probes, dim=dim)
    counted = _Counted(hvp, dtype)
    if probes >= dim:
        basis = torch.eye(dim, dtype=dtype)
        total = sum(float(counted(basis[i])[i]) for i in range(dim))
        return TraceEstimate(total, 0.0, dim, counted.calls, True)
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(probes):
        v = torch.randint(0, 2, (dim,), generator=generator).to(dtype) * 2 - 1
        samples.append(float(torch.dot(counted(v).to(torch.float64), v.to(torch.float64))))
    arr = np.asarray(samples)
    stderr = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else None
    return TraceEstimate(float(arr.mean()), stderr, probes, counted.calls, False)
