"""Micro-batched gradients/HVPs equal the unchunked ones; the HVP budget stops Lanczos and says so."""

import numpy as np
import pytest
import torch

from hf_fairquant.curvature import GroupObjective, top_eigenvalue
from hf_fairquant.errors import FairQuantError

from tests.diagnostics.conftest import data, group_tensors  # noqa: F401 - data is a fixture


@pytest.fixture(scope="module")
def objectives(data):
    from tests.diagnostics.conftest import TinyClassifier

    model = TinyClassifier().eval()
    x, y = group_tensors(data, "minor")
    params = list(model.parameters())
    whole = GroupObjective(model, params, [({"pixel_values": x}, y)])
    chunked = GroupObjective(model, params, [({"pixel_values": x}, y)], chunk_size=3)
    return whole, chunked


def test_chunked_hvp_and_gradient_equal_the_unchunked(objectives):
    whole, chunked = objectives
    assert len(whole.batches) == 1 and len(chunked.batches) == -(-whole.num_examples // 3) > 1
    assert max(int(labels.shape[0]) for _, labels in chunked.batches) == 3
    assert chunked.num_examples == whole.num_examples
    v = torch.randn(whole.dim, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(chunked.hvp(v), whole.hvp(v), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked.gradient(), whole.gradient(), rtol=1e-5, atol=1e-7)
    assert chunked.loss() == pytest.approx(whole.loss(), rel=1e-6)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_chunk_size(objectives, bad):
    whole, _ = objectives
    with pytest.raises(FairQuantError, match="chunk_size must be a positive int or None"):
        GroupObjective(whole.model, whole.params, whole.batches, chunk_size=bad)


def _spread_spectrum(dim=200, seed=0):
    """A symmetric matrix whose top eigenvalues are close together: Lanczos needs many steps."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    values = np.linspace(0.0, 1.0, dim) ** 0.5
    matrix = torch.from_numpy((q * values) @ q.T)
    return matrix, float(values[-1])


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_the_hvp_budget_stops_the_eigensolver_and_says_so(method):
    matrix, top = _spread_spectrum()
    calls = []
    hvp = lambda v: calls.append(1) or matrix @ v  # noqa: E731
    short = top_eigenvalue(hvp, 200, method=method, tol=1e-8, max_iterations=6, dtype=torch.float64)
    assert short.hvps == len(calls) == 6  # stopped exactly at the budget
    assert not short.converged
    assert short.residual is not None and short.residual > 1e-8  # the achieved residual, above tol
    assert short.value <= top + 1e-9


def test_lanczos_converges_within_budget_and_reports_its_residual():
    matrix, top = _spread_spectrum(dim=60)
    estimate = top_eigenvalue(lambda v: matrix @ v, 60, tol=1e-6, max_iterations=200, lanczos_vectors=64, dtype=torch.float64)
    assert estimate.converged and estimate.residual <= 1e-6
    assert estimate.hvps <= 60
    assert estimate.value == pytest.approx(top, rel=1e-5)


def test_explain_marks_lambda_not_converged_at_a_small_budget(data):
    from hf_fairquant import explain
    from tests.diagnostics.conftest import TinyClassifier

    ex = explain(TinyClassifier().eval(), "w4", data, "group", hvp_budget=5, probes=2, tol=1e-9, progress=False)
    for per_group in ex.curvature["fp"].values():
        assert per_group.lambda_hvps <= 5 - 2 - 1  # the Taylor term and the trace probes come first
        assert not per_group.lambda_converged and per_group.lambda_residual > 1e-9
    assert "not converged" in ex.to_markdown()
