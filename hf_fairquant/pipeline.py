"""Run a YAML recipe end to end: data → full-precision model (loaded or trained) → audit.

A recipe has the sections ``data`` (:class:`~hf_fairquant.data.DataConfig`), ``model``
(:class:`ModelSection`), ``training`` (``transformers.TrainingArguments`` fields; omit it to
audit a model as it is), ``audit`` (:class:`~hf_fairquant.audit.AuditConfig`), ``explain``
(:class:`ExplainSection`), ``mitigation`` and ``card``. Each section is parsed with
``HfArgumentParser``; an unknown key is an error naming the key and its section.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import deployment
from ._atomic import contains_cwd, output_lock, scratch_directory, sweep_stale
from ._coerce import coerce_fields
from ._config import field_names
from ._paths import local_folder_or_hub_id
from .audit import AuditConfig
from .data import (
    WORDLEVEL,
    DataConfig,
    check_image_size,
    check_subset,
    load_grouped_dataset,
    load_raw_grouped_dataset,
    preprocess_grouped_dataset,
    text_length_limit,
    train_wordlevel_tokenizer,
)
from .diagnostics import ExplainConfig
from .errors import FairQuantError, MissingFileError
from .groups import GroupSpec
from .quantization.onnx.export import ONNX_DIR, ExportConfig


@dataclass
class ModelSection:
    """The full-precision model: a Hub id / local folder, or a config to train from scratch."""

    name_or_path: str | None = field(default=None, metadata={"help": "Hub model id or local folder"})
    config: dict[str, Any] | None = field(default=None, metadata={"help": "transformers config kwargs incl. model_type"})
    tokenizer: str | None = field(
        default=None, metadata={"help": f"a text model from `config`: '{WORDLEVEL}' trains a WordLevel tokenizer on the "
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
    data: DataConfig
    model: ModelSection
    audit: AuditConfig
    explain: ExplainSection = field(default_factory=ExplainSection)
    card: CardSection = field(default_factory=CardSection)
    training: Any = None  # transformers.TrainingArguments (full-precision fine-tune) or None
    mitigation: Any = None  # FairQuantTrainingArguments (fair QAT from the FP weights) or None
    export: ExportConfig | None = None  # ONNX Runtime artifacts of the FP model, audited as deployed
    output_dir: str = "outputs/run"


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
    allowed = set(_SECTIONS) | {"training", "mitigation", "export", "output_dir"}
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
        from .training import FairQuantTrainingArguments

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
    recipe = RunRecipe(training=training, mitigation=mitigation, export=export, output_dir=str(out), **sections)
    if recipe.model.name_or_path is None and recipe.model.config is None:
        raise FairQuantError("recipe section 'model' needs `name_or_path` or `config`")
    if recipe.model.name_or_path is None and training is None:
        raise FairQuantError("a model built from `config` must be trained: add a `training` section")
    return recipe


def _build_model(section: ModelSection, spec_labels: list[str], is_text: bool, tokenizer: Any = None) -> Any:
    import transformers
    from transformers import AutoConfig

    auto = transformers.AutoModelForSequenceClassification if is_text else transformers.AutoModelForImageClassification
    id2label = dict(enumerate(spec_labels))
    if section.name_or_path is not None:
        return auto.from_pretrained(section.name_or_path)
    cfg = dict(section.config)
    model_type = cfg.pop("model_type", None)
    if model_type is None:
        raise FairQuantError("model.config needs a `model_type` (e.g. resnet, vit, distilbert)")
    if tokenizer is not None:  # a model from scratch gets its embedding size from the tokenizer
        if cfg.get("vocab_size", len(tokenizer)) < len(tokenizer):
            raise FairQuantError(f"model.config vocab_size {cfg['vocab_size']} < the tokenizer's {len(tokenizer)} tokens")
        cfg.setdefault("vocab_size", len(tokenizer))
        cfg.setdefault("pad_token_id", tokenizer.pad_token_id)
    config = AutoConfig.for_model(model_type, num_labels=len(spec_labels), id2label=id2label,
                                  label2id={v: k for k, v in id2label.items()}, **cfg)
    return auto.from_config(config)


def _processors(section: ModelSection, data: DataConfig) -> tuple[Any, Any]:
    """(image_processor, tokenizer) from the model's folder/Hub repo; None when it has none."""
    from transformers import AutoImageProcessor, AutoTokenizer

    if section.tokenizer not in (None, WORDLEVEL) and data.text_column:
        return None, AutoTokenizer.from_pretrained(section.tokenizer)
    if section.name_or_path is None:
        return None, None  # a WordLevel tokenizer is trained once the data is loaded (load_recipe_data)

    if data.text_column:
        return None, AutoTokenizer.from_pretrained(section.name_or_path)
    try:
        return AutoImageProcessor.from_pretrained(section.name_or_path), None
    except (OSError, ValueError):
        return None, None  # no preprocessor_config.json: the documented default transform


def load_recipe_data(section: ModelSection, data: DataConfig) -> tuple[Any, GroupSpec, Any, Any]:
    """The model-ready splits, the fitted GroupSpec, and the image processor / tokenizer used:
    the model's own, or (``model.tokenizer: wordlevel``) a WordLevel tokenizer trained on the
    raw training split's text — saved with the model by the run."""
    image_processor, tokenizer = _processors(section, data)
    raw, spec = load_raw_grouped_dataset(data)
    model_config = _model_config(section) if data.text_column else None
    if tokenizer is None and section.tokenizer == WORDLEVEL and data.text_column:
        length = data.max_length or text_length_limit(None, model_config) or 128
        tokenizer = train_wordlevel_tokenizer(raw[data.train_split][data.text_column][:], model_max_length=length)
    prepared = preprocess_grouped_dataset(
        raw, data, image_processor=image_processor, tokenizer=tokenizer, model_config=model_config
    )
    return prepared, spec, image_processor, tokenizer


def _model_config(section: ModelSection) -> Any:
    """The model's transformers config before the model is built (for the text length limit)."""
    from transformers import AutoConfig

    if section.name_or_path is not None:
        return AutoConfig.from_pretrained(section.name_or_path)
    cfg = dict(section.config or {})
    model_type = cfg.pop("model_type", None)
    return AutoConfig.for_model(model_type, **cfg) if model_type else None


def _check_text_length(data: DataConfig, model: Any) -> None:
    """An explicit ``max_length`` beyond the model's position embeddings fails before any work."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if data.text_column and data.max_length is not None and isinstance(limit, int) and data.max_length > limit:
        raise FairQuantError(
            f"data.max_length={data.max_length} exceeds the model's max_position_embeddings={limit}; "
            f"use --max-length {limit} or less (default: the smaller of the tokenizer's and the model's limit)"
        )


def train_fp_model(model: Any, args: Any, train_dataset: Any, processing_class: Any = None) -> Any:
    """Plain full-precision fine-tune with ``transformers.Trainer``."""
    from transformers import Trainer

    trainer = Trainer(  # a tokenizer gives DataCollatorWithPadding: batches padded dynamically
        model=model, args=args, train_dataset=train_dataset.with_format("torch"), processing_class=processing_class
    )
    trainer.train()
    return trainer.model


@dataclass
class RunResult:
    """What :func:`run` produced: the results dict (also ``results.json``) and the models."""

    results: dict[str, Any]
    output_dir: Path
    fp_model: Any
    quantized_model: Any = None
    pushed_to: str | None = None


def check_output_dir(out: str | Path, overwrite: bool, option: str = "--output-dir") -> None:
    """The output folder can be written whole: not a file, not the working folder (or one
    above it: replacing it fails with EBUSY after all the work), empty unless ``overwrite``."""
    out = Path(out)
    if contains_cwd(out):
        raise FairQuantError(
            f"output folder {out} is the working folder or contains it: it is replaced whole at the end, "
            f"so choose a new subfolder for {option} (e.g. {option} outputs/run)"
        )
    if out.exists() and not out.is_dir():
        raise FairQuantError(f"output folder {out} exists and is a file; choose another --output-dir")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FairQuantError(
            f"output folder {out} exists and is not empty; pass --overwrite to replace it, or choose another --output-dir"
        )


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or below it (resolved)."""
    path, folder = path.expanduser().resolve(), folder.expanduser().resolve()
    return path == folder or folder in path.parents


def _checkpoints_outside(recipe: RunRecipe, scratch: Path) -> None:
    """Trainer checkpoints never go into the final output folder (it is replaced whole at the
    end, and an empty ``checkpoints/`` there would make a rerun refuse the folder): a default or
    inside-the-output ``output_dir`` becomes a subfolder of the run's scratch folder."""
    out = Path(recipe.output_dir)
    for section, name in (("training", "checkpoints"), ("mitigation", "mitigation_checkpoints")):
        args = getattr(recipe, section)
        if args is not None and _inside(Path(args.output_dir), out):
            args.output_dir = str(scratch / name)


def _check_model_path(section: ModelSection) -> None:
    """A local-looking path that does not exist is an error (not a Hub id to try)."""
    name = section.name_or_path
    if name is not None and not isinstance(name, str):
        raise FairQuantError(f"model.name_or_path must be a Hub model id or a local folder, got {name!r}")
    if section.config is not None and not isinstance(section.config, dict):
        raise FairQuantError(f"model.config must be a mapping of transformers config fields incl. model_type, got {section.config!r}")
    if name is not None:
        local_folder_or_hub_id(name)


def _check_model_config(section: ModelSection, is_text: bool) -> None:
    """A ``model.config`` builds a transformers config of a classification model for this data
    (the config only: no weights), so an unknown ``model_type`` or field fails here."""
    if section.name_or_path is not None or section.config is None:
        return
    import difflib

    from transformers import CONFIG_MAPPING, AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    cfg = dict(section.config)
    model_type = cfg.pop("model_type", None)
    if not isinstance(model_type, str):
        raise FairQuantError(f"model.config needs a `model_type` string (e.g. resnet, vit, distilbert), got {model_type!r}")
    task, allowed = (("text", MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES) if is_text
                     else ("image", MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES))
    if model_type not in CONFIG_MAPPING or model_type not in allowed:
        close = difflib.get_close_matches(model_type, list(allowed), n=3)
        raise FairQuantError(
            f"model.config.model_type {model_type!r} is not a transformers {task}-classification model type"
            + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
            + f"; e.g. {', '.join(sorted(allowed)[:8])}, …"
        )
    try:
        AutoConfig.for_model(model_type, **cfg)
    except (ValueError, TypeError, AttributeError) as err:
        raise FairQuantError(f"model.config for {model_type!r} is not a valid config: {err}") from None


def _worst_recipe(report: Any) -> str | None:
    """The audited PTQ recipe that costs the worst-off group most: the largest fall of the
    minimum group accuracy (ties: the fewest bits). Not the gap change — a recipe that wrecks
    every group can shrink the gap while it hurts the worst group most."""
    if not report.quantized:
        return None
    fp_worst = report.fp.metrics["worst_group_accuracy"]
    worst = max(report.quantized, key=lambda r: (fp_worst - r.metrics["worst_group_accuracy"], -r.effective_bits))
    return worst.name


def publish_backend(choice: str, quant: Any, model: Any) -> str:
    """The backend the mitigated model is trained and published with (see ``CardSection``):
    ``auto`` picks torchao — transformers-native artifacts — when it can quantize every planned
    module (all Linear, group size fits) and the recipe names no other backend."""
    from .errors import UnsupportedByBackendError
    from .quantization import DEFAULT_BACKEND, available_backends, get_backend

    allowed = ["auto", *available_backends()]
    if choice not in allowed:
        raise FairQuantError(f"card.publish_backend {choice!r} is not one of {allowed}")
    if choice != "auto":
        return choice
    if quant.backend != DEFAULT_BACKEND:
        return quant.backend
    torchao = get_backend("torchao").configure(quant)
    try:
        torchao.check(model, quant.plan(model))
    except UnsupportedByBackendError:
        return quant.backend
    return torchao.name


def _with_backend(args: Any, backend: str) -> None:
    """Compile the mitigation recipe (``args.quantization``) to ``backend``."""
    quant = args.quantization_recipe
    if quant is not None and quant.backend != backend:
        args.quantization = dataclasses.replace(quant, backend=backend).to_dict()


def check_recipe(recipe: RunRecipe, overwrite: bool = False) -> list[Any]:
    """The one static check of a run, before any data or model is loaded (the section
    dataclasses have already checked each option's type and range as they were built): the quantization recipes (presets, bits, unique names that match their bits),
    the explained recipe, the mitigation's recipe and columns, the output folder, a local model
    path, the data source. Returns the audited PTQ recipes. :func:`run`, :func:`dry_run` and the
    CLI's ``audit``/``train`` call it; :func:`check_data` does the checks that need the data."""
    from .quantization import parse_recipes

    if recipe.audit.recipes is not None and not isinstance(recipe.audit.recipes, (list, tuple, str)):
        raise FairQuantError(f"audit.recipes must be a list of presets or recipe mappings, got {recipe.audit.recipes!r}")
    audited = parse_recipes(recipe.audit.recipes) if recipe.audit.recipes else []
    reserved = [str(r) for r in audited if str(r).upper().startswith("FAIR-QAT")]
    if reserved:
        raise FairQuantError(f"audit.recipes names {reserved} start with FAIR-QAT, the mitigated model's row; rename them")
    from .quantization import available_backends

    if recipe.card.publish_backend not in ["auto", *available_backends()]:
        raise FairQuantError(f"card.publish_backend {recipe.card.publish_backend!r} is not one of {['auto', *available_backends()]}")
    check_output_dir(recipe.output_dir, overwrite)
    _check_model_path(recipe.model)
    if recipe.model.tokenizer is not None and not recipe.data.text_column:
        raise FairQuantError("model.tokenizer applies to text data: set data.text_column (or drop model.tokenizer)")
    if recipe.data.text_column and recipe.model.name_or_path is None and recipe.model.tokenizer is None:
        raise FairQuantError(f"a text model from `config` needs a tokenizer: model.tokenizer: {WORDLEVEL} (trained on the "
                             "training split) or a tokenizer folder / Hub id")
    _check_model_config(recipe.model, is_text=bool(recipe.data.text_column))
    _check_data_config(recipe.data)
    explained = recipe.explain.recipe
    if recipe.explain.enabled and explained and _audited_recipe(audited, explained) is None:
        raise FairQuantError(
            f"explain.recipe {explained!r} is not among audit.recipes {[str(r) for r in audited]}"
        )
    for section in ("training", "mitigation"):
        if getattr(recipe, section) is not None:
            _check_training_arguments(section, getattr(recipe, section))
    if recipe.export is not None:
        from .quantization import QuantRecipe
        from .quantization.onnx.compile import check_recipe_bits

        for r in recipe.export.recipes:
            check_recipe_bits(QuantRecipe.parse(r))  # 2-bit weights: refused before data or models load
        names = {str(r).upper() for r in audited}
        missing = [r for r in recipe.export.recipes if str(QuantRecipe.parse(r)).upper() not in names]
        if missing:
            raise FairQuantError(
                f"export.recipes {missing} are not among audit.recipes {recipe.audit.recipes}: the deployed model is "
                "compared with its simulation, so audit each exported recipe too"
            )
    mitigation = recipe.mitigation
    if mitigation is not None and mitigation.quantization_recipe is None and mitigation.quantization_budget is None:
        raise FairQuantError("recipe section 'mitigation' needs `quantization` (a preset, a recipe or 'auto:<budget>')")
    return audited


def _check_training_arguments(section: str, args: Any) -> None:
    """Ranges TrainingArguments leaves to torch or to the first step (a negative learning rate,
    zero batch size, no steps to take, a seed numpy refuses)."""
    problems = []
    if not args.learning_rate >= 0:
        problems.append(f"learning_rate must be >= 0, got {args.learning_rate}")
    if not args.weight_decay >= 0:
        problems.append(f"weight_decay must be >= 0, got {args.weight_decay}")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(args, key) < 1:
            problems.append(f"{key} must be >= 1, got {getattr(args, key)}")
    if args.max_steps == 0 or args.max_steps < -1 or (args.max_steps == -1 and not args.num_train_epochs > 0):
        problems.append(
            f"there is nothing to train: max_steps={args.max_steps}, num_train_epochs={args.num_train_epochs} "
            "(set max_steps > 0, or num_train_epochs > 0 with max_steps unset)"
        )
    if not 0 <= args.seed < 2**32:
        problems.append(f"seed must be in 0..2**32-1, got {args.seed}")
    if problems:
        raise FairQuantError(f"recipe section '{section}': " + "; ".join(problems))


def _audited_recipe(audited: list[Any], name: str) -> Any:
    """The audited recipe named ``name`` (case-insensitive), or None."""
    return next((r for r in audited if str(r).upper() == str(name).upper()), None)


def _check_data_config(data: DataConfig) -> None:
    """The data section: a known offline source or something that can be a path or a Hub id."""
    from .data import OFFLINE_SOURCES

    check_subset(data)
    source = data.source
    if not isinstance(source, str) or not source.strip():
        raise FairQuantError(f"data.source must be an offline source {sorted(OFFLINE_SOURCES)}, a local path or a Hub id; got {source!r}")
    if source in OFFLINE_SOURCES or Path(source).exists():
        pass
    else:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        looks_local = source.startswith((".", "/", "~")) or source.count("/") > 1 or Path(source).suffix.lower() in (
            ".csv", ".tsv", ".json", ".jsonl", ".parquet")
        try:
            validate_repo_id(source)
            valid = True
        except HFValidationError:
            valid = False
        close = [s for s in OFFLINE_SOURCES if _similar(s, source)]
        if looks_local or not valid or ("/" not in source and close):
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FairQuantError(
                f"data.source {source!r} is not an offline source{hint}, not an existing local file or folder"
                + ("" if looks_local else ", and not a Hub dataset id (namespace/name)")
                + f"; offline sources: {sorted(OFFLINE_SOURCES)}"
            )
    if not data.group_columns:
        raise FairQuantError("data.group_columns must name at least one column")
    if not (isinstance(data.long_tail_fraction, float) and 0 < data.long_tail_fraction <= 1):
        raise FairQuantError(f"data.long_tail_fraction must be in (0, 1], got {data.long_tail_fraction!r}")
    if data.train_split == data.eval_split:
        raise FairQuantError(
            f"data.train_split and data.eval_split are both {data.train_split!r}: evaluating on the training split "
            "hides what quantization does to unseen examples; name two splits"
        )


def _similar(a: str, b: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, a.lower().replace("-", "_"), b.lower().replace("-", "_")).ratio() >= 0.75


def check_data(recipe: RunRecipe, data: Any, spec: GroupSpec, audited: list[Any]) -> None:
    """The checks that need the loaded splits (no model yet, no forward pass): the mitigation's
    group columns, calibration sizes against the number of groups, the explain sample against
    the smallest test group, group weights against the training groups."""
    from .groups import check_enough_for_groups

    train = data[recipe.data.train_split]
    counts = spec.counts(data)
    train_groups = [g for g, c in counts[recipe.data.train_split].items() if c > 0]
    if any(r.uses_activations for r in audited):
        check_enough_for_groups(recipe.audit.calibration_size, len(train_groups), "audit.calibration_size", train_groups)
    if recipe.explain.enabled and any(r.uses_activations for r in audited):
        check_enough_for_groups(recipe.explain.calibration_size, len(train_groups), "explain.calibration_size", train_groups)
    m = recipe.mitigation
    if m is not None:
        missing = [c for c in m.group_columns if c not in train.column_names]
        if missing:
            raise FairQuantError(
                f"mitigation.group_column {m.group_column!r}: column(s) {missing} not in split "
                f"'{recipe.data.train_split}'; data.group_columns is {recipe.data.group_columns} "
                f"(columns: {train.column_names})"
            )
        quant = m.quantization_recipe
        if m.quantization_budget is not None or (quant is not None and quant.uses_activations):
            mspec = GroupSpec(m.group_columns).fit(train)
            check_enough_for_groups(m.calibration_size, mspec.num_groups, "mitigation.calibration_size", mspec.names)
        if isinstance(m.group_weighting, dict) and m.group_columns == list(spec.columns):
            named = {str(k) for k in m.group_weighting}
            if named != set(train_groups):
                raise FairQuantError(
                    f"mitigation.group_weighting must name every training group exactly: unknown "
                    f"{sorted(named - set(train_groups))}, missing {sorted(set(train_groups) - named)}; "
                    f"the groups are {train_groups}"
                )
    e = recipe.explain
    if e.enabled and audited and isinstance(e.examples_per_group, int) and not isinstance(e.examples_per_group, bool):
        test_counts = {g: c for g, c in counts[recipe.data.eval_split].items() if c > 0}
        small = {g: c for g, c in test_counts.items() if c < e.examples_per_group}
        if small:
            g, c = min(small.items(), key=lambda kv: kv[1])
            raise FairQuantError(
                f"explain.examples_per_group={e.examples_per_group} but the smallest group of split "
                f"'{recipe.data.eval_split}', {g!r}, has {c} example(s); use at most {c}, 'all' or null "
                "(every example up to 512)"
            )


def dry_run(recipe: RunRecipe, *, overwrite: bool = False) -> str:
    """Check a recipe without loading data or models (no network) and describe what a run does.

    Checks the quantization presets and recipes, the output folder, a local model path, and —
    for a model built from ``config`` — that the mitigation recipe's patterns match its modules.
    """
    audited = check_recipe(recipe, overwrite)
    mitigation = recipe.mitigation
    steps = []
    model = recipe.model.name_or_path or f"a new {recipe.model.config.get('model_type')} from config"
    source = recipe.data.source + (f" ({recipe.data.subset})" if recipe.data.subset else "")
    steps.append(f"data: {source}, groups by {', '.join(recipe.data.group_columns)}"
                 + (f", derived long tail {recipe.data.long_tail_classes}" if recipe.data.long_tail_classes else ""))
    steps.append(f"model: {model}" + (f", fine-tuned for {recipe.training.num_train_epochs:g} epoch(s)" if recipe.training else ""))
    steps.append(f"audit: FP + {', '.join(str(r) for r in audited) or 'nothing'}")
    if recipe.export is not None:
        steps.append(f"export: ONNX Runtime {', '.join(recipe.export.recipes)} of the FP model → onnx/, audited as deployed")
    if recipe.explain.enabled and audited:
        steps.append(f"explain: {recipe.explain.recipe or 'the recipe that lowers the worst group most'}")
    if mitigation is not None:
        quant = mitigation.quantization_recipe
        if quant is not None and recipe.model.config is not None:
            built = _build_model(recipe.model, ["0", "1"], is_text=bool(recipe.data.text_column))
            quant.plan(built)  # patterns match?
            quant = dataclasses.replace(quant, backend=publish_backend(recipe.card.publish_backend, quant, built))
        what = str(quant) if quant is not None else f"bits allocated under a {mitigation.quantization_budget:g}-bit budget"
        steps.append(f"mitigate: FairQuantTrainer, {what}, sampling {mitigation.group_sampling} "
                     f"(power {mitigation.sampling_power:g}), weighting {mitigation.group_weighting}")
    steps.append(f"write: {recipe.output_dir}/")
    return "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))


def run(
    recipe: RunRecipe,
    *,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    token: str | None = None,
    command: str | None = None,
    echo: Any = print,
) -> RunResult:
    """Execute a recipe (see :func:`_run`) with its trainer checkpoints in a scratch folder
    beside the output folder, removed on success, failure, exit and SIGTERM; temporaries of
    an earlier interrupted run of the same output folder are removed first."""
    check_recipe(recipe, overwrite)  # before any folder is touched
    out = Path(recipe.output_dir)
    sweep_stale(out)
    saved = {s: getattr(recipe, s).output_dir for s in ("training", "mitigation") if getattr(recipe, s) is not None}
    try:
        with output_lock(out, command), scratch_directory(out, "checkpoints") as scratch:  # one run per folder
            _checkpoints_outside(recipe, scratch)
            return _run(
                recipe, overwrite=overwrite, push_to_hub=push_to_hub, token=token, command=command, echo=echo,
                scratch=scratch,
            )
    finally:
        for section, folder in saved.items():
            getattr(recipe, section).output_dir = folder


def _run(
    recipe: RunRecipe,
    *,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    token: str | None = None,
    command: str | None = None,
    echo: Any = print,
    scratch: Path,
) -> RunResult:
    """Execute a recipe: FP model (load or train) → audit PTQ → explain the worst recipe →
    mitigate with FairQuantTrainer → audit the mitigated model → write the output folder
    (quantized model, ``README.md`` card, ``report.md``, ``results.json``, ``plots/``) → push.

    Sections turn stages off: no ``audit.recipes`` → no PTQ audit; ``explain.enabled: false``;
    no ``mitigation`` → nothing is trained after the FP model. The folder appears whole at the
    end (written under a temporary name); an existing non-empty folder needs ``overwrite``.
    """
    from transformers import set_seed

    from .audit import audit
    from .report import build_results, write_outputs

    started = time.perf_counter()
    # ---------------------------------------------------------------- validate before heavy work
    audited = check_recipe(recipe, overwrite)
    out = Path(recipe.output_dir)
    if push_to_hub is not None:
        from .hub import check_push_arguments

        token = check_push_arguments(push_to_hub, token)
        recipe.card.repo_id = push_to_hub
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 1)
        return now

    # ---------------------------------------------------------------- data and FP model
    echo("[1/5] data and full-precision model")
    t = time.perf_counter()
    data, spec, image_processor, tokenizer = load_recipe_data(recipe.model, recipe.data)
    # published beside the model: the model's own, else the fitted default transform as an image processor
    processor = image_processor or tokenizer or getattr(data, "image_processor", None)
    train, evaluation = data[recipe.data.train_split], data[recipe.data.eval_split]
    check_data(recipe, data, spec, audited)  # before the model is built or trained
    class_names = _class_names(train)
    if recipe.training is not None:  # the initial weights too: a run is reproducible across processes
        set_seed(recipe.training.seed)
    model = _build_model(recipe.model, class_names, is_text=bool(recipe.data.text_column), tokenizer=tokenizer)
    for split, ds in ((recipe.data.train_split, train), (recipe.data.eval_split, evaluation)):
        spec.validate(ds, label_column="labels", num_labels=model.config.num_labels, split=split)
    check_image_size(model.config, evaluation)
    _check_text_length(recipe.data, model)
    if recipe.mitigation is not None and recipe.mitigation.quantization_recipe is not None:
        quant = recipe.mitigation.quantization_recipe
        quant.plan(model)  # a pattern matching no module fails here
        _with_backend(recipe.mitigation, publish_backend(recipe.card.publish_backend, quant, model))
    if recipe.export is not None:
        deployment.check_exportable(model, recipe.export.recipes)  # no ONNX Runtime kernel: fails here
    counts = spec.counts(data)
    echo(f"groups by {spec.name}: " + "; ".join(f"{s}: {c}" for s, c in counts.items()))
    t = lap("data", t)
    if recipe.training is not None:
        model = train_fp_model(model, recipe.training, train, processing_class=tokenizer)
        t = lap("fp_training", t)
    model.eval()

    # ---------------------------------------------------------------- audit PTQ
    deployed, staging, deployed_info = {}, None, None
    if recipe.export is not None:
        echo(f"[2/5] export to ONNX Runtime: {', '.join(recipe.export.recipes)}")
        staging = scratch / "onnx-staging"  # removed with the scratch folder, whatever happens
        staging.mkdir()
        deployed, files = deployment.export_deployed(
            model, recipe.export, train, spec, staging,
            calibration_size=recipe.audit.calibration_size, seed=recipe.audit.seed,
        )
        deployment.measure_speedups(model, deployed, files, evaluation, staging, recipe.export)
        deployed_info = {"files": files, "not_exported": {}}
        t = lap("export", t)
    echo(f"[2/5] audit: {', '.join(str(r) for r in audited) or 'FP only'}")
    report = audit(
        model, evaluation, audited, spec, calibration_dataset=train, config=recipe.audit, processing_class=tokenizer,
        deployed_models=deployed,
    )
    t = lap("audit", t)

    # ---------------------------------------------------------------- explain the worst
    explanation = None
    explained = recipe.explain.recipe or _worst_recipe(report)
    if recipe.explain.enabled and explained is not None:
        from .diagnostics import explain

        echo(f"[3/5] explain {explained}")
        options = {f: getattr(recipe.explain, f) for f in field_names(ExplainConfig)}
        explanation = explain(  # the parsed recipe: a mapping-form recipe's name is no preset
            model, _audited_recipe(audited, explained) or explained.lower(), evaluation, spec, calibration_dataset=train,
            config=ExplainConfig(**options), processing_class=tokenizer,
        )
        t = lap("explain", t)

    # ---------------------------------------------------------------- mitigate, audit again
    quantized = trainer = None
    if recipe.mitigation is not None:
        echo("[4/5] mitigate with FairQuantTrainer")
        trainer, quantized = _mitigate(model, recipe.mitigation, train, processing_class=tokenizer)
        t = lap("mitigation", t)
        name = f"FAIR-QAT {str(trainer.quant_recipe).upper()}"
        mitigated = audit(
            model, evaluation, [], spec, calibration_dataset=train, config=recipe.audit, quantized_models={name: quantized},
            reference=report,  # the FP pass of the first audit, not a second one
            processing_class=tokenizer,
        )
        result = mitigated.quantized[0]
        result.recipe = trainer.quant_recipe.to_dict()
        report.quantized.append(result)
        report.settings.setdefault("timings_s", {})[name] = mitigated.settings["timings_s"][name]
        t = lap("mitigated_audit", t)
        if deployed_info is not None:
            reason = deployment.not_exportable_reason(model, trainer.quant_recipe)
            if reason is not None:  # e.g. 2-bit weights: ONNX Runtime has no kernel for them
                deployed_info["not_exported"][name] = reason  # the final screen says so

    # ---------------------------------------------------------------- write, push
    echo("[5/5] write the output folder")
    timings["total"] = round(time.perf_counter() - started, 1)
    results = build_results(
        recipe, report, spec=spec, data=data, model=model, explanation=explanation, explained=explained,
        trainer=trainer, quantized=quantized, timings=timings, command=command, deployment=deployed_info,
    )
    write_outputs(
        out, results, fp_model=model if recipe.training is not None else None, quantized=quantized,
        processor=processor, explanation=explanation,
        onnx_dir=staging / ONNX_DIR if staging is not None else None,
    )
    pushed = None
    if push_to_hub is not None:
        from .hub import push_folder

        echo(f"pushing {out} to {push_to_hub}")
        pushed = push_folder(out, push_to_hub, token=token)
    from .report import summary_screen

    echo("\n" + summary_screen(results, out, pushed))
    return RunResult(results, out, model, quantized, pushed)


def _mitigate(model: Any, args: Any, train: Any, processing_class: Any = None) -> tuple[Any, Any]:
    """Fair QAT of a copy of ``model`` with :class:`FairQuantTrainer`; returns (trainer, frozen model)."""
    import copy

    from .training import FairQuantTrainer

    trainer = FairQuantTrainer(
        model=copy.deepcopy(model).train(), args=args, train_dataset=train, processing_class=processing_class
    )
    trainer.train()
    return trainer, trainer.model.eval()


def _class_names(train: Any) -> list[str]:
    """Class names from the ``labels`` ClassLabel feature, else ``"0".."K-1"``."""
    feature = train.features["labels"]
    if hasattr(feature, "names"):
        return list(feature.names)
    labels = train.with_format("numpy")["labels"][:]
    return [str(i) for i in range(int(labels.max()) + 1)]


def load_pretrained(name_or_path: str, data: DataConfig) -> tuple[Any, Any, GroupSpec]:
    """A trained model (Hub id or local folder, eval mode) and its grouped, preprocessed splits,
    loaded as :func:`run` loads them (with the model's image processor/tokenizer if it has one)."""
    section = ModelSection(name_or_path=name_or_path)
    image_processor, tokenizer = _processors(section, data)
    model_config = _model_config(section) if data.text_column else None
    splits, spec = load_grouped_dataset(data, image_processor=image_processor, tokenizer=tokenizer, model_config=model_config)
    model = _build_model(section, _class_names(splits[data.train_split]), is_text=bool(data.text_column))
    _check_text_length(data, model)
    return model.eval(), splits, spec
