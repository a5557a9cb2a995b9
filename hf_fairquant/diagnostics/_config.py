"""``ExplainConfig``: every option of :func:`~hf_fairquant.explain`, declared once (API, YAML, CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._config import check_positive_int, check_positive_number
from ..curvature import METHODS
from ..errors import FairQuantError
from ._sampling import DEFAULT_MAX_EXAMPLES, check_examples_per_group

PARAMETER_SETS = ("quantized", "all")
#: Hessian-vector products per group and model (trace probes + λ_max + the Taylor term). One
#: HVP over ViT-B/16's 85 M weights costs a few seconds on one CPU thread however few the
#: examples (≈ 2–3 FP passes over 32 examples at 64², benchmarks/scale.py): 12 per group (4 trace
#: probes, 1 Taylor, 7 Lanczos steps) keeps a two-group explain of ViT-B near 60 FP passes.
DEFAULT_HVP_BUDGET = 12


@dataclass
class ExplainConfig:
    """How :func:`~hf_fairquant.explain` measures the chain (YAML section ``explain``, CLI
    ``hf-fairquant explain --<option>``)."""

    calibration_size: int = field(
        default=512, metadata={"help": "group-stratified examples that calibrate activation ranges"}
    )
    examples_per_group: int | str | None = field(
        default=None,
        metadata={"help": f"examples per group for gradients and curvature: N, 'all', or unset (every group at "
                          f"the smallest group's count, at most {DEFAULT_MAX_EXAMPLES})"},
    )
    parameters: str = field(
        default="quantized", metadata={"help": f"parameters of gradients and Hessians: one of {', '.join(PARAMETER_SETS)}"}
    )
    eigen_method: str = field(
        default="lanczos", metadata={"help": f"λ_max estimator: one of {', '.join(METHODS)}", "aliases": ["--method"]}
    )
    tol: float = field(default=1e-3, metadata={"help": "relative tolerance of λ_max"})
    max_iterations: int = field(default=100, metadata={"help": "most Hessian-vector products of λ_max (Lanczos or power)"})
    lanczos_vectors: int = field(default=4, metadata={"help": "recent Lanczos vectors kept for reorthogonalisation"})
    probes: int = field(default=4, metadata={"help": "Hutchinson probes for the Hessian trace"})
    hvp_budget: int | None = field(
        default=DEFAULT_HVP_BUDGET,
        metadata={"help": "Hessian-vector products per group and model (trace probes + 1 Taylor + λ_max); "
                          "λ_max stops there, marked not converged with its residual; unset: no cap"},
    )
    chunk_size: int | None = field(
        default=16, metadata={"help": "examples per micro-batch of gradients and HVPs (bounds memory); unset: batch_size"}
    )
    quantized_curvature: bool = field(
        default=False, metadata={"help": "also the curvature of the quantized (straight-through) model"}
    )
    batch_size: int = field(default=128, metadata={"help": "examples per forward pass"})
    seed: int = field(default=0, metadata={"help": "seeds sampling, probes and starting vectors"})
    torch_compile: bool = field(
        default=False,
        metadata={"help": "run the FP-vs-quantized evaluation pass through torch.compile (compile seconds reported "
                          "apart; gradients and Hessian-vector products always run eagerly: no double backward "
                          "through compiled graphs)"},
    )
    shard: bool = field(
        default=True,
        metadata={"help": "under several processes (accelerate launch, torchrun) each runs its share of the batches "
                          "and micro-batches, gathered in order (the explanation equals one process's); "
                          "--no-shard: every process runs everything"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.examples_per_group, str) and self.examples_per_group.strip().isdigit():
            self.examples_per_group = int(self.examples_per_group)  # the CLI passes text
        check_examples_per_group(self.examples_per_group)
        for name in ("calibration_size", "max_iterations", "lanczos_vectors", "probes", "batch_size"):
            check_positive_int(f"explain {name}", getattr(self, name))
        if self.chunk_size is not None:
            check_positive_int("explain chunk_size", self.chunk_size)
        lambda_budget_of(self.hvp_budget, self.probes, self.max_iterations)
        check_positive_int("explain seed", self.seed, allow_zero=True)
        check_positive_number("explain tol", self.tol)
        if self.eigen_method not in METHODS:
            raise FairQuantError(f"unknown eigen_method {self.eigen_method!r}; allowed: {list(METHODS)}")
        if self.parameters not in PARAMETER_SETS:
            raise FairQuantError(f"unknown parameters {self.parameters!r}; allowed: {list(PARAMETER_SETS)}")


def lambda_budget_of(hvp_budget: int | None, probes: int, max_iterations: int) -> int:
    """Products left for λ_max of the FP model after the trace probes and the Taylor term."""
    if hvp_budget is None:
        return max_iterations
    if isinstance(hvp_budget, bool) or not isinstance(hvp_budget, int) or hvp_budget < probes + 3:
        raise FairQuantError(
            f"hvp_budget={hvp_budget!r} Hessian-vector products per group cannot cover probes={probes} "
            f"(trace) + 1 (Taylor term) + at least 2 for λ_max: pass an int ≥ {probes + 3}, "
            "lower probes, or None (no cap)"
        )
    return min(max_iterations, hvp_budget - probes - 1)
