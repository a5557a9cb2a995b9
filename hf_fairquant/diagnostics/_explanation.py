"""The result of ``explain``: every link of the chain, per layer and per group, as plain data.

``to_dict``/``from_dict`` give the JSON form (non-finite numbers become null); ``to_markdown``
renders one table per link; ``save(output_dir)`` writes ``explain.json``, ``explain.md`` and
``explain_plots/*.png`` (each atomically; other files in ``output_dir`` are kept).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .._atomic import atomic_directory, atomic_write_text
from .._format import JsonRoundTrip, to_plain

JSON_NAME = "explain.json"
MARKDOWN_NAME = "explain.md"
PLOTS_DIR = "explain_plots"


@dataclass
class LayerDrift:
    """Link 1 for one quantized module: ‖W_q − W‖/‖W‖ and ‖a_q − a‖/‖a‖ of its output per group."""

    name: str
    bits: str
    weight_error: float
    activation_drift: dict[str, float]
    activation_drift_overall: float


@dataclass
class LogitSummary:
    """Means over a group's examples (accuracy as a fraction)."""

    accuracy: float
    loss: float
    logit_variance: float
    confidence: float
    margin: float


@dataclass
class GroupLogits:
    """Link 2 for one group: FP and quantized logit statistics and what changed."""

    count: int
    fp: LogitSummary
    quantized: LogitSummary
    variance_ratio: float  # quantized / FP mean logit variance
    excess_loss: float  # L_g(θ_q) − L_g(θ)
    accuracy_drop: float  # FP − quantized accuracy


@dataclass
class GroupGradient:
    """Link 3 for one group: ‖∇L_g‖ of FP and quantized (straight-through) model, and the
    sampling noise floor of the FP norm at this many examples: √(n_A·n_B)/n · ‖∇L_A − ∇L_B‖
    over a random split of the sample into halves A, B — an estimate of E‖∇L̂ − ∇L‖, the norm
    that sampling noise alone gives (None for one example). A norm near it is sample size."""

    examples: int
    fp: float
    quantized: float
    noise_floor: float | None = None


@dataclass
class GroupCurvature:
    """Link 4 for one group: λ_max of its loss Hessian and its trace (Hutchinson)."""

    examples: int
    lambda_max: float
    lambda_hvps: int
    lambda_converged: bool
    trace: float
    trace_stderr: float | None
    trace_probes: int
    trace_exact: bool
    lambda_residual: float | None = None  # achieved relative residual of the λ_max estimate


@dataclass
class GroupBound:
    """Link 5 for one group: the terms of the bound, the Taylor prediction, the measured excess."""

    gradient_term: float  # ‖g_g‖·‖Δθ‖
    curvature_term: float  # ½·λ_max(H_g)·‖Δθ‖²
    bound: float  # their sum
    taylor: float  # g_g·Δθ + ½·ΔθᵀH_gΔθ
    measured_excess_loss: float


@dataclass
class BoundSummary:
    """Does ranking groups by the bound rank them as the measured excess loss does?"""

    delta_norm: float
    groups: dict[str, GroupBound]
    order_by_bound: list[str]
    order_by_measured: list[str]
    ordering_matches: bool
    kendall_tau: float | None


@dataclass
class Explanation(JsonRoundTrip):
    """The chain from weight change to group accuracy (see :func:`~hf_fairquant.explain`).
    ``from_json(text)``; ``load(path)`` reads ``explain.json`` or the folder :meth:`save` wrote."""

    json_file_name: ClassVar[str] = JSON_NAME

    group_columns: list[str]
    group_names: list[str]
    quantization: dict[str, Any]
    layers: list[LayerDrift]
    logits: dict[str, GroupLogits]
    overall: GroupLogits
    gradients: dict[str, GroupGradient]
    curvature: dict[str, dict[str, GroupCurvature]]
    bound: BoundSummary
    settings: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """The JSON form: nested dicts and lists of numbers and strings (NaN/inf → None)."""
        return to_plain(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Explanation":
        def logits(d: dict) -> GroupLogits:
            return GroupLogits(**{**d, "fp": LogitSummary(**d["fp"]), "quantized": LogitSummary(**d["quantized"])})

        bound = dict(data["bound"])
        bound["groups"] = {g: GroupBound(**b) for g, b in bound["groups"].items()}
        return cls(
            group_columns=list(data["group_columns"]),
            group_names=list(data["group_names"]),
            quantization=data["quantization"],
            layers=[LayerDrift(**d) for d in data["layers"]],
            logits={g: logits(d) for g, d in data["logits"].items()},
            overall=logits(data["overall"]),
            gradients={g: GroupGradient(**d) for g, d in data["gradients"].items()},
            curvature={m: {g: GroupCurvature(**d) for g, d in per.items()} for m, per in data["curvature"].items()},
            bound=BoundSummary(**bound),
            settings=data.get("settings", {}),
        )

    # ------------------------------------------------------------ rendering
    def to_markdown(self, plots_dir: str | None = None) -> str:
        """One table per link of the chain; ``plots_dir`` (relative) adds the plots."""
        from ._markdown import render

        return render(self, plots_dir)

    def save_plots(self, folder: str | Path) -> list[Path]:
        """``groups.png``, ``activation_drift.png``, ``gradients_curvature.png`` in ``folder``."""
        from ._plots import save_plots

        return save_plots(self, Path(folder))

    def save(self, output_dir: str | Path) -> Path:
        """Write ``explain.json``, ``explain.md`` and ``explain_plots/`` into ``output_dir``."""
        out = Path(output_dir)
        with atomic_directory(out / PLOTS_DIR) as tmp:
            self.save_plots(tmp)
        atomic_write_text(out / JSON_NAME, self.to_json())
        atomic_write_text(out / MARKDOWN_NAME, self.to_markdown(PLOTS_DIR))
        return out

