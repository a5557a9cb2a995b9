"""``ExplainConfig``: every option of :func:`~hf_fairquant.explain`, declared once (API, YAML, CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._config import check_positive_int, check_positive_number
from ..curvature import METHODS
from ..errors import FairQuantError
from ._sampling import DEFAULT_MAX_EXAMPLES, check_examples_per_group

PARAMETER_SETS = ("quantized", "all")


@dataclass
class ExplainConfig:
    """How :func:`~hf_fairquant.explain` measures the chain (YAML section ``explain``, CLI
    ``hf-fairquant explain --<option>``)."""

    calibration_size: int = field(
        default=512, metadata={"help": "group-stratified examples that calibrate activation ranges"}
    )
    examples_per_group: int | str | None = field(
        default=None,
        metadata={"help": f"examples per group for gradients and curvature: N, 'all', or unset (all, at most "
                          f"{DEFAULT_MAX_EXAMPLES})"},
    )
    parameters: str = field(
        default="quantized", metadata={"help": f"parameters of gradients and Hessians: one of {', '.join(PARAMETER_SETS)}"}
    )
    eigen_method: str = field(
        default="lanczos", metadata={"help": f"λ_max estimator: one of {', '.join(METHODS)}", "aliases": ["--method"]}
    )
    tol: float = field(default=1e-3, metadata={"help": "relative tolerance of λ_max"})
    max_iterations: int = field(default=100, metadata={"help": "Lanczos restarts / power-iteration steps"})
    lanczos_vectors: int = field(default=8, metadata={"help": "Lanczos basis size (scipy eigsh ncv)"})
    probes: int = field(default=32, metadata={"help": "Hutchinson probes for the Hessian trace"})
    quantized_curvature: bool = field(
        default=False, metadata={"help": "also the curvature of the quantized (straight-through) model"}
    )
    batch_size: int = field(default=128, metadata={"help": "examples per forward pass"})
    seed: int = field(default=0, metadata={"help": "seeds sampling, probes and starting vectors"})

    def __post_init__(self) -> None:
        if isinstance(self.examples_per_group, str) and self.examples_per_group.strip().isdigit():
            self.examples_per_group = int(self.examples_per_group)  # the CLI passes text
        check_examples_per_group(self.examples_per_group)
        for name in ("calibration_size", "max_iterations", "lanczos_vectors", "probes", "batch_size"):
            check_positive_int(f"explain {name}", getattr(self, name))
        check_positive_int("explain seed", self.seed, allow_zero=True)
        check_positive_number("explain tol", self.tol)
        if self.eigen_method not in METHODS:
            raise FairQuantError(f"unknown eigen_method {self.eigen_method!r}; allowed: {list(METHODS)}")
        if self.parameters not in PARAMETER_SETS:
            raise FairQuantError(f"unknown parameters {self.parameters!r}; allowed: {list(PARAMETER_SETS)}")
