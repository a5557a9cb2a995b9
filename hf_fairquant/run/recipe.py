"""A run's recipe: the YAML sections, each parsed into a dataclass with ``HfArgumentParser``.

A recipe has the sections ``data`` (:class:`~hf_fairquant.data.DataConfig`), ``model``
(:class:`ModelSection`), ``training`` (``transformers.TrainingArguments`` fields; omit it to
audit a model as it is), ``audit`` (:class:`~hf_fairquant.audit.AuditConfig`), ``explain``
(:class:`ExplainSection`), ``mitigation`` (:class:`~hf_fairquant.FairQuantTrainingArguments`),
``export`` (:class:`~hf_fairquant.quantization.onnx.ExportConfig`) and ``card``
(:class:`CardSection`). An unknown key is an error naming the key and its section; YAML's ``5e-4``
and quoted numbers become the field's type.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._coerce import coerce_fields
from ..audit import AuditConfig
from ..data import BPE, WORDLEVEL, DataConfig
from ..diagnostics import ExplainConfig
from ..errors import FairQuantError, MissingFileError
from ..quantization.onnx.export import ExportConfig


@dataclass
class ModelSection:
    """The full-precision model: a Hub id / local folder, or a config to train from scratch, and
    its task (see :mod:`hf_fairquant.tasks`)."""

    name_or_path: str | None = field(default=None, metadata={"help": "Hub model id or local folder"})
    task: str | None = field(
        default=None,
        metadata={"help": "the model's task (classification, causal-lm); default: the checkpoint's head "
                          "(config.architectures); for a model from `config`, causal-lm on text without a label "
                          "column, else classification"},
    )
    config: dict[str, Any] | None = field(default=None, metadata={"help": "transformers config kwargs incl. model_type"})
    tokenizer: str | None = field(
        default=None, metadata={"help": f"a text model from `config`: '{WORDLEVEL}' trains a WordLevel tokenizer (classifiers), "
                                        f"'{BPE}' a byte-level BPE (causal LMs, model.config.vocab_size tokens) on the "
                                        "training split's text (saved with the model), or a tokenizer folder / Hub id"}
    )


@dataclass
class ExplainSection(ExplainConfig):
    """The run's ``explain`` section: every :class:`~hf_fairquant.diagnostics.ExplainConfig` option,
    plus whether to explain and which audited recipe."""

    enabled: bool = field(default=True, metadata={"help": "explain one audited recipe"})
    recipe: str | None = field(
        default=None, metadata={"help": "an audited recipe; default: the one that lowers the worst group's accuracy most"}
    )


@dataclass
class CardSection:
    """What the model card says about the model and data beyond the measured numbers."""

    model_name: str | None = field(default=None, metadata={"help": "default: the output folder's name"})
    repo_id: str | None = field(default=None, metadata={"help": "shown in the card's load example; default: --push-to-hub, else the output folder"})
    license: str = "apache-2.0"
    dataset_name: str | None = field(default=None, metadata={"help": "human-readable dataset name"})
    dataset_id: str | None = field(default=None, metadata={"help": "Hub dataset id for model-index (default: data.source)"})
    group_description: str | None = field(default=None, metadata={"help": "how the groups are defined (say if derived)"})
    tags: list[str] = field(default_factory=list)
    publish_backend: str = field(
        default="auto",
        metadata={"help": "backend the mitigated model is trained and published with: auto (torchao — loads with plain "
                          "transformers — when it can quantize every planned module, i.e. all are Linear; else the "
                          "recipe's), quanto or torchao"},
    )


@dataclass
class RunRecipe:
    """A parsed recipe: one dataclass per YAML section (``training``/``mitigation``/``export``
    None when the section is absent)."""

    data: DataConfig
    model: ModelSection
    audit: AuditConfig
    explain: ExplainSection = field(default_factory=ExplainSection)
    card: CardSection = field(default_factory=CardSection)
    training: Any = None  # transformers.TrainingArguments (full-precision fine-tune) or None
    mitigation: Any = None  # FairQuantTrainingArguments (fair QAT from the FP weights) or None
    export: ExportConfig | None = None  # ONNX Runtime artifacts of the FP model, audited as deployed
    output_dir: str = "outputs/run"
    #: torch threads for the whole run (None: torch's default); pinning it makes a run reproducible
    #: number for number on machines with different core counts, and robust beside other jobs
    threads: int | None = None


_SECTIONS = {"data": DataConfig, "model": ModelSection, "audit": AuditConfig, "explain": ExplainSection, "card": CardSection}


def _parse_section(name: str, cls: type, values: Any) -> Any:
    from transformers import HfArgumentParser

    values = values or {}
    if not isinstance(values, dict):
        raise FairQuantError(f"recipe section '{name}' must be a mapping, got {type(values).__name__}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise FairQuantError(f"unknown key(s) {unknown} in recipe section '{name}'; allowed: {sorted(allowed)}")
    values = coerce_fields(name, cls, values)  # YAML's "5e-4" and quoted numbers → the field's type
    try:
        (parsed,) = HfArgumentParser(cls).parse_dict(values, allow_extra_keys=False)
    except FairQuantError:
        raise
    except (ValueError, TypeError) as err:  # TrainingArguments' own checks (enums, combinations)
        raise FairQuantError(f"recipe section '{name}': {err}") from None
    return parsed


def load_recipe(path: str | Path, output_dir: str | None = None) -> RunRecipe:
    """Parse a YAML recipe; ``output_dir`` overrides the recipe's."""
    from transformers import TrainingArguments

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"recipe {path} not found (give the path of a YAML recipe, e.g. recipes/digits_vit.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise FairQuantError(f"recipe {path} is not valid YAML: {err}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise FairQuantError(
            f"recipe {path} must be a YAML mapping with sections {sorted(_SECTIONS) + ['mitigation', 'training']}, "
            f"got a {type(raw).__name__}"
        )
    allowed = set(_SECTIONS) | {"training", "mitigation", "export", "output_dir", "threads"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise FairQuantError(f"unknown top-level key(s) {unknown} in recipe {path}; allowed: {sorted(allowed)}")
    sections = {name: _parse_section(name, cls, raw.get(name)) for name, cls in _SECTIONS.items()}
    out = output_dir or raw.get("output_dir") or f"outputs/{path.stem}"
    training = None
    if raw.get("training") is not None:
        train_cfg = {"output_dir": str(Path(out) / "checkpoints"), "report_to": "none", **raw["training"]}
        training = _parse_section("training", TrainingArguments, train_cfg)
    mitigation = None
    if raw.get("mitigation") is not None:
        from ..training import FairQuantTrainingArguments

        cfg = {"output_dir": str(Path(out) / "mitigation_checkpoints"), "report_to": "none",
               "group_column": ",".join(sections["data"].group_columns), **raw["mitigation"]}  # the data's groups
        if isinstance(cfg.get("quantization"), dict):  # HfArgumentParser takes dict fields as JSON
            cfg["quantization"] = json.dumps(cfg["quantization"])
        if isinstance(cfg.get("group_weighting"), dict):
            cfg["group_weighting"] = json.dumps(cfg["group_weighting"])
        mitigation = _parse_section("mitigation", FairQuantTrainingArguments, cfg)
    export = _parse_section("export", ExportConfig, raw["export"]) if raw.get("export") is not None else None
    if export is not None and not export.enabled:
        export = None
    threads = raw.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise FairQuantError(f"recipe key 'threads' must be a positive integer (torch threads for the run) or null, got {threads!r}")
    recipe = RunRecipe(training=training, mitigation=mitigation, export=export, output_dir=str(out), threads=threads,
                       **sections)
    if recipe.model.name_or_path is None and recipe.model.config is None:
        raise FairQuantError("recipe section 'model' needs `name_or_path` or `config`")
    if recipe.model.name_or_path is None and training is None:
        raise FairQuantError("a model built from `config` must be trained: add a `training` section")
    return recipe


#: The stages of a run, in order; ``run(recipe, stages=...)`` selects some (data and the FP model
#: are what every other stage starts from, so they always run).
STAGES = ("data", "fp", "export", "audit", "explain", "mitigate", "publish")
