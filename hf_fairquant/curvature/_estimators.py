"""Curvature from Hessian-vector products: top eigenvalue (Lanczos or power iteration), trace.

Everything here sees the Hessian only through ``hvp(v) -> H v`` on flat torch vectors, so it
works for any loss (see :class:`~._objective.GroupObjective`) and is testable against an
explicit matrix. Lanczos is scipy's ``eigsh`` (ARPACK, implicitly restarted) on a
``LinearOperator``; power iteration is the method PyHessian uses; the trace is Hutchinson's
estimator with Rademacher probes and its standard error.
"""

from __future__ import annotations

from ..errors import FairQuantError

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

HVP = Callable[[torch.Tensor], torch.Tensor]
METHODS = ("lanczos", "power")


@dataclass(frozen=True)
class EigenEstimate:
    """λ_max and what it cost: Hessian-vector products, and whether the stopping rule was met."""

    value: float
    hvps: int
    converged: bool
    method: str


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
        return self.hvp(v.to(self.dtype)).detach()

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

    ``lanczos``: ``eigsh(which="LA")`` — the largest *algebraic* eigenvalue; ``tol`` is ARPACK's
    relative residual tolerance, ``max_iterations`` its restart limit, ``lanczos_vectors`` the
    Krylov basis size (ncv). For ``dim <= lanczos_vectors`` the matrix is built from ``dim``
    products and solved exactly. ``power``: PyHessian's power iteration — the eigenvalue of
    largest *magnitude*; stops when successive Rayleigh quotients differ by < ``tol`` relative,
    or after ``max_iterations`` products.
    """
    if method not in METHODS:
        raise FairQuantError(f"unknown eigenvalue method {method!r}; allowed: {list(METHODS)}")
    check_positive(tol=tol, max_iterations=max_iterations, lanczos_vectors=lanczos_vectors, dim=dim)
    counted = _Counted(hvp, dtype)
    rng = np.random.default_rng(seed)
    if method == "power":
        value, converged = _power_iteration(counted, dim, tol, max_iterations, rng, dtype)
    elif dim <= max(lanczos_vectors, 2):
        dense = np.stack([counted.numpy(np.eye(dim)[i]) for i in range(dim)], axis=1)
        value, converged = float(np.linalg.eigvalsh((dense + dense.T) / 2)[-1]), True
    else:
        value, converged = _lanczos(counted, dim, tol, max_iterations, lanczos_vectors, rng)
    return EigenEstimate(float(value), counted.calls, converged, method)


def _lanczos(counted: _Counted, dim: int, tol: float, max_iterations: int, ncv: int, rng) -> tuple[float, bool]:
    operator = LinearOperator((dim, dim), matvec=counted.numpy, dtype=np.float64)
    try:
        values = eigsh(
            operator, k=1, which="LA", tol=tol, maxiter=max_iterations, ncv=min(ncv, dim),
            v0=rng.standard_normal(dim), return_eigenvectors=False,
        )
        return float(values[-1]), True
    except ArpackNoConvergence as err:
        if len(err.eigenvalues) == 0:
            raise RuntimeError(
                f"Lanczos did not converge within max_iterations={max_iterations} restarts "
                f"({counted.calls} Hessian-vector products); raise max_iterations or tol"
            ) from err
        warnings.warn(f"Lanczos stopped before tol={tol} ({counted.calls} products); using its best estimate")
        return float(np.max(err.eigenvalues.real)), False


def _power_iteration(counted: _Counted, dim: int, tol: float, max_iterations: int, rng, dtype) -> tuple[float, bool]:
    v = torch.from_numpy(rng.standard_normal(dim)).to(dtype)
    v /= v.norm()
    value = None
    for _ in range(max_iterations):
        hv = counted(v)
        estimate = float(torch.dot(hv.to(torch.float64), v.to(torch.float64)))
        norm = hv.norm()
        if norm == 0:
            return 0.0, True
        v = hv / norm
        if value is not None and abs(estimate - value) / (abs(value) + 1e-6) < tol:
            return estimate, True
        value = estimate
    return float(value), False


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
