"""Curvature estimators against exact Hessians (torch.autograd.functional.hessian)."""

import copy

import numpy as np
import pytest
import torch

from hf_fairquant.curvature import GroupObjective, hutchinson_trace, top_eigenvalue

from tests.diagnostics.conftest import data, flat_loss, group_tensors  # noqa: F401 - data is a fixture


@pytest.fixture(scope="module")
def exact(data):
    """(objective over all parameters of the float32 model, exact float64 Hessian)."""
    from tests.diagnostics.conftest import TinyClassifier

    model = TinyClassifier().eval()
    x, y = group_tensors(data, "minor")
    names = [n for n, _ in model.named_parameters()]
    objective = GroupObjective(model, [model.get_parameter(n) for n in names], [({"pixel_values": x[:7]}, y[:7]), ({"pixel_values": x[7:]}, y[7:])])
    double = copy.deepcopy(model).double()
    loss, theta = flat_loss(double, names, x.double(), y)
    hessian = torch.autograd.functional.hessian(loss, theta)
    return objective, hessian.numpy()


def test_objective_loss_and_gradient(exact, data):
    objective, _ = exact
    model = objective.model
    x, y = group_tensors(data, "minor")
    loss = torch.nn.functional.cross_entropy(model(x).logits, y)
    assert objective.loss() == pytest.approx(loss.item(), rel=1e-6)
    direct = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, objective.params)])
    torch.testing.assert_close(objective.gradient(), direct, rtol=1e-5, atol=1e-7)
    assert objective.num_examples == len(y)


def test_hvp_equals_the_exact_hessian_times_v(exact):
    objective, hessian = exact
    v = torch.randn(objective.dim, generator=torch.Generator().manual_seed(1))
    assert objective.dim == hessian.shape[0] > 100
    np.testing.assert_allclose(objective.hvp(v).double().numpy(), hessian @ v.double().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_top_eigenvalue_matches_the_exact_one(exact, method):
    objective, hessian = exact
    eigenvalues = np.linalg.eigvalsh(hessian)
    assert eigenvalues[-1] > abs(eigenvalues[0])  # so power iteration (largest |λ|) finds λ_max too
    estimate = top_eigenvalue(objective.hvp, objective.dim, method=method, tol=1e-7, max_iterations=5000)
    assert estimate.converged
    assert estimate.value == pytest.approx(eigenvalues[-1], rel=1e-4)
    assert estimate.hvps > 0


def test_lanczos_at_the_default_tolerance_is_already_accurate(exact):
    objective, hessian = exact
    estimate = top_eigenvalue(objective.hvp, objective.dim)  # tol=1e-3 bounds the residual, not the error
    assert estimate.value == pytest.approx(np.linalg.eigvalsh(hessian)[-1], rel=1e-4)


def test_hutchinson_is_exact_with_enough_probes(exact):
    objective, hessian = exact
    trace = hutchinson_trace(objective.hvp, objective.dim, probes=objective.dim)
    assert trace.exact and trace.stderr == 0 and trace.hvps == objective.dim
    assert trace.value == pytest.approx(np.trace(hessian), rel=1e-4)


def test_hutchinson_estimate_lies_within_its_standard_error(exact):
    objective, hessian = exact
    trace = hutchinson_trace(objective.hvp, objective.dim, probes=64, seed=3)
    assert not trace.exact and trace.probes == trace.hvps == 64
    assert abs(trace.value - np.trace(hessian)) <= 3 * trace.stderr


def test_the_stated_standard_error_is_calibrated():
    """Over many seeds the errors, in units of the stated standard error, have spread ≈ 1."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 40))
    matrix = torch.from_numpy(a + a.T)
    exact = float(torch.trace(matrix))
    z = []
    for seed in range(300):
        t = hutchinson_trace(lambda v: matrix @ v, 40, probes=16, seed=seed, dtype=torch.float64)
        z.append((t.value - exact) / t.stderr)
    z = np.asarray(z)
    assert 0.85 < z.std() < 1.2
    assert 0.6 < np.mean(np.abs(z) <= 1) < 0.78  # ≈ 68 % within one standard error


def test_explicit_matrices():
    matrix = torch.diag(torch.tensor([-5.0, 1.0, 2.0, 3.0] + [0.5] * 20, dtype=torch.float64))
    hvp = lambda v: matrix @ v  # noqa: E731
    lanczos = top_eigenvalue(hvp, 24, dtype=torch.float64, tol=1e-8)
    assert lanczos.value == pytest.approx(3.0, rel=1e-8)  # the largest algebraic eigenvalue
    power = top_eigenvalue(hvp, 24, method="power", dtype=torch.float64, tol=1e-10, max_iterations=1000)
    assert power.value == pytest.approx(-5.0, rel=1e-6)  # power iteration: the largest magnitude
    small = top_eigenvalue(lambda v: torch.diag(torch.tensor([1.0, 4.0])) @ v, 2)
    assert small.value == pytest.approx(4.0) and small.hvps == 2  # tiny: built densely
    one_probe = hutchinson_trace(hvp, 24, probes=1, dtype=torch.float64)
    assert one_probe.stderr is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "arnoldi"}, "unknown eigenvalue method 'arnoldi'; allowed: \\['lanczos', 'power'\\]"),
        ({"max_iterations": 0}, "max_iterations must be positive, got 0"),
        ({"tol": -1.0}, "tol must be positive"),
        ({"lanczos_vectors": 0}, "lanczos_vectors must be positive"),
    ],
)
def test_bad_eigen_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        top_eigenvalue(lambda v: v, 10, **kwargs)


def test_bad_probes():
    with pytest.raises(ValueError, match="probes must be positive, got 0"):
        hutchinson_trace(lambda v: v, 10, probes=0)
