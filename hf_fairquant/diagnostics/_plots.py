"""PNG plots of an Explanation (matplotlib, Agg canvas; no pyplot state, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:  # pragma: no cover
    from ._explanation import Explanation

FP_COLOR, Q_COLOR = "#4C72B0", "#DD8452"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _bars(ax, groups: Sequence[str], series: dict[str, Sequence[float]], title: str) -> None:
    x = np.arange(len(groups))
    width = 0.8 / len(series)
    for i, ((label, values), color) in enumerate(zip(series.items(), (FP_COLOR, Q_COLOR))):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label, color=color)
    ax.set_xticks(x, groups, rotation=30 if len(groups) > 4 else 0)
    ax.set_title(title)


def save_plots(ex: "Explanation", folder: str | Path) -> list[Path]:
    """``groups.png``, ``activation_drift.png``, ``gradients_curvature.png`` in ``folder``."""
    folder = Path(folder)
    groups = ex.group_names
    paths = []

    fig = _figure(4 * 3, 3.4)
    axes = fig.subplots(1, 3)
    for ax, (key, title, scale) in zip(
        axes, (("accuracy", "accuracy (%)", 100), ("loss", "mean loss", 1), ("logit_variance", "mean logit variance", 1))
    ):
        _bars(ax, groups, {
            "FP": [scale * getattr(ex.logits[g].fp, key) for g in groups],
            "quantized": [scale * getattr(ex.logits[g].quantized, key) for g in groups],
        }, title)
    axes[0].legend()
    fig.suptitle(f"FP vs {ex.quantization.get('name', 'quantized')}, per group")
    paths.append(folder / "groups.png")
    fig.savefig(paths[-1], dpi=120)

    drift = np.array([[d.activation_drift[g] for g in groups] for d in ex.layers], dtype=float)
    label_width = 0.06 * max(len(d.name) for d in ex.layers)  # inches for the layer names at 7 pt
    fig = _figure(2.5 + label_width + 1.0 * len(groups), 1.6 + 0.28 * len(ex.layers))
    ax = fig.subplots()
    image = ax.imshow(drift, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_yticks(range(len(ex.layers)), [d.name for d in ex.layers], fontsize=7)
    for (i, j), value in np.ndenumerate(drift):
        color = "black" if image.norm(value) > 0.6 else "white"  # readable on viridis' light end
        ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, label="‖a_q − a‖ / ‖a‖")
    ax.set_title("activation drift per layer and group", fontsize=10)
    paths.append(folder / "activation_drift.png")
    fig.savefig(paths[-1], dpi=120)

    fig = _figure(9, 3.4)
    left, right = fig.subplots(1, 2)
    _bars(left, groups, {
        "FP": [ex.gradients[g].fp for g in groups],
        "quantized": [ex.gradients[g].quantized for g in groups],
    }, "gradient norm ‖∇L_g‖")
    left.legend()
    _bars(right, groups, {m: [per[g].lambda_max for g in groups] for m, per in ex.curvature.items()},
          "top Hessian eigenvalue λ_max")
    if len(ex.curvature) > 1:
        right.legend()
    paths.append(folder / "gradients_curvature.png")
    fig.savefig(paths[-1], dpi=120)
    return paths
