"""RunResult: what a run measured, typed — the one thing the report, the card and ``results.json``
are rendered from.

Each stage of a run fills its part (the data and model facts, the :class:`~hf_fairquant.AuditReport`,
the :class:`~hf_fairquant.Explanation`, the mitigation, the published model, the deployed files).
``to_dict``/``save`` write ``results.json`` (versioned: :data:`RESULTS_FORMAT`); ``load``/``from_dict``
read it back into a RunResult, so a report or card can be rendered again from the file alone.
In-process objects (the models, the processor) ride along but are never serialised.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ._atomic import atomic_write_text
from ._format import JsonRoundTrip, to_plain
from .audit import AuditReport
from .diagnostics import Explanation
from .errors import ArtifactError

#: The on-disk format of ``results.json`` (version 1 called the pipeline tag ``model.task``).
RESULTS_FORMAT = "hf_fairquant.results/2"
RESULTS_NAME = "results.json"


@dataclass
class ModelInfo:
    """The full-precision model: where it came from, what it is, how it was trained here."""

    name_or_path: str | None
    model_type: str
    num_parameters: int
    task: str
    pipeline_tag: str
    auto_class: str
    trained_here: bool
    fp_training: dict[str, Any] | None = None


@dataclass
class DataInfo:
    """The evaluated data and its groups."""

    source: str
    train_split: str
    eval_split: str
    group_columns: list[str]
    group_names: list[str]
    group_counts: dict[str, dict[str, int]]
    long_tail_classes: list[str] = field(default_factory=list)
    long_tail_fraction: float | None = None


@dataclass
class Mitigation:
    """The fair QAT: its recipe, trainer arguments and final training loss."""

    name: str
    recipe: dict[str, Any]
    arguments: dict[str, Any]
    train_loss: float | None = None
    allocated_bits: dict[str, int] | None = None


@dataclass
class Published:
    """The model the run published (the mitigated one): backend, bits, size, bits per layer, and
    the modules kept float so that plain transformers loads it (``{name: why}``)."""

    name: str
    backend: str
    effective_bits: float
    size_bytes: int
    fp_size_bytes: int
    layer_bits: dict[str, str]
    kept_float: dict[str, str] = field(default_factory=dict)


@dataclass
class Deployment:
    """The ONNX Runtime files exported and audited, and the models that could not be exported."""

    files: list[dict[str, Any]] = field(default_factory=list)
    not_exported: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult(JsonRoundTrip):
    """Everything a run measured (serialised as ``results.json``) plus, in this process, the models."""

    command: str
    hf_fairquant_version: str
    model: ModelInfo
    data: DataInfo
    card: dict[str, Any]
    audit: AuditReport
    explained_recipe: str | None = None
    explanation: Explanation | None = None
    mitigation: Mitigation | None = None
    published: Published | None = None
    deployment: Deployment | None = None
    wall_time_s: dict[str, float] = field(default_factory=dict)
    #: library versions and torch threads the numbers were measured with
    environment: dict[str, Any] = field(default_factory=dict)
    # in this process only (never serialised)
    output_dir: Path | None = field(default=None, repr=False, compare=False)
    fp_model: Any = field(default=None, repr=False, compare=False)
    quantized_model: Any = field(default=None, repr=False, compare=False)
    processor: Any = field(default=None, repr=False, compare=False)
    pushed_to: str | None = field(default=None, repr=False, compare=False)

    json_file_name = RESULTS_NAME

    # ------------------------------------------------------------ access
    @property
    def published_row(self) -> Any:
        """The audit row of the published model."""
        return self.audit.result(self.published.name) if self.published else None

    # ------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return to_plain({
            "format": RESULTS_FORMAT,
            "hf_fairquant_version": self.hf_fairquant_version,
            "command": self.command,
            "model": asdict(self.model),
            "data": asdict(self.data),
            "card": dict(self.card),
            "audit": self.audit.to_dict(),
            "explained_recipe": self.explained_recipe,
            "explain": self.explanation.to_dict() if self.explanation is not None else None,
            "mitigation": asdict(self.mitigation) if self.mitigation else None,
            "published": asdict(self.published) if self.published else None,
            "deployment": asdict(self.deployment) if self.deployment else None,
            "wall_time_s": dict(self.wall_time_s),
            "environment": dict(self.environment),
        })

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/results.json`` (atomically)."""
        return atomic_write_text(Path(folder) / RESULTS_NAME, self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunResult":
        fmt = data.get("format")
        if fmt not in (RESULTS_FORMAT, "hf_fairquant.results/1"):
            raise ArtifactError(f"results format {fmt!r} is not one this version reads ({RESULTS_FORMAT})")
        model = dict(data["model"])
        if fmt == "hf_fairquant.results/1":  # its "task" was the pipeline tag of a classifier
            model.setdefault("pipeline_tag", model["task"])
            model["task"] = "classification"
            model.setdefault("auto_class", "AutoModelForSequenceClassification" if model["pipeline_tag"].startswith("text")
                             else "AutoModelForImageClassification")
        return cls(
            command=data["command"],
            hf_fairquant_version=data["hf_fairquant_version"],
            model=_build(ModelInfo, model),
            data=_build(DataInfo, data["data"]),
            card=dict(data["card"]),
            audit=AuditReport.from_dict(data["audit"]),
            explained_recipe=data.get("explained_recipe"),
            explanation=Explanation.from_dict(data["explain"]) if data.get("explain") else None,
            mitigation=_build(Mitigation, data["mitigation"]) if data.get("mitigation") else None,
            published=_build(Published, data["published"]) if data.get("published") else None,
            deployment=_build(Deployment, data["deployment"]) if data.get("deployment") else None,
            wall_time_s=dict(data.get("wall_time_s") or {}),
            environment=dict(data.get("environment") or {}),
        )

    @classmethod
    def from_loaded(cls, data: dict[str, Any]) -> "RunResult":
        return cls.from_dict(data)


def _build(cls: type, values: dict[str, Any]) -> Any:
    """``cls`` from a JSON object, ignoring keys it does not know (a newer writer's additions)."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


__all__ = ["RESULTS_FORMAT", "RESULTS_NAME", "DataInfo", "Deployment", "Mitigation", "ModelInfo", "Published", "RunResult"]
