"""Run a YAML recipe end to end: data → full-precision model (loaded or trained) → audit.

A recipe has the sections ``data`` (:class:`~hf_fairquant.data.DataConfig`), ``model``
(:class:`ModelSection`), ``training`` (``transformers.TrainingArguments`` fields; omit it to
audit a model as it is), ``audit`` (:class:`~hf_fairquant.audit.AuditConfig`), ``explain``
(:class:`ExplainSection`), ``mitigation`` and ``card``. Each section is parsed with
``HfArgumentParser``; an unknown key is an error naming the key and its section.
"""

from __future__ import annotations

from .errors import FairQuantError, MissingFileError

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._atomic import atomic_directory, atomic_write_text
from ._config import field_names
from ._paths import local_folder_or_hub_id
from .audit import AuditConfig
from .data import (
    WORDLEVEL, DataConfig, check_image_size, check_subset, load_grouped_dataset, load_raw_grouped_dataset,
    preprocess_grouped_dataset, text_length_limit, train_wordlevel_tokenizer,
)
from .diagnostics import ExplainConfig
from .groups import GroupSpec



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
    (parsed,) = HfArgumentParser(cls).parse_dict(values, allow_extra_keys=False)
    return parsed


def load_recipe(path: str | Path, output_dir: str | None = None) -> RunRecipe:
    """Parse a YAML recipe; ``output_dir`` overrides the recipe's."""
    from transformers import TrainingArguments

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"recipe {path} not found")
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
    allowed = set(_SECTIONS) | {"training", "mitigation", "output_dir"}
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
    recipe = RunRecipe(training=training, mitigation=mitigation, output_dir=str(out), **sections)
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


def _check_output_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FairQuantError(f"output folder {out} exists and is a file; choose another --output-dir")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FairQuantError(
            f"output folder {out} exists and is not empty; pass --overwrite to replace it, or choose another --output-dir"
        )


def _check_model_path(section: ModelSection) -> None:
    """A local-looking path that does not exist is an error (not a Hub id to try)."""
    if section.name_or_path is not None:
        local_folder_or_hub_id(section.name_or_path)


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


def _check_recipe(recipe: RunRecipe, overwrite: bool) -> list[Any]:
    """What can be checked without data or models; returns the audited PTQ recipes."""
    from .quantization import parse_recipes

    from .quantization import available_backends

    audited = parse_recipes(recipe.audit.recipes) if recipe.audit.recipes else []
    if recipe.card.publish_backend not in ["auto", *available_backends()]:
        raise FairQuantError(f"card.publish_backend {recipe.card.publish_backend!r} is not one of {['auto', *available_backends()]}")
    _check_output_dir(Path(recipe.output_dir), overwrite)
    _check_model_path(recipe.model)
    check_subset(recipe.data)
    if recipe.model.tokenizer is not None and not recipe.data.text_column:
        raise FairQuantError("model.tokenizer applies to text data: set data.text_column (or drop model.tokenizer)")
    if recipe.data.text_column and recipe.model.name_or_path is None and recipe.model.tokenizer is None:
        raise FairQuantError(f"a text model from `config` needs a tokenizer: model.tokenizer: {WORDLEVEL} (trained on the "
                             "training split) or a tokenizer folder / Hub id")
    explained = recipe.explain.recipe
    if recipe.explain.enabled and explained and explained.upper() not in {str(r).upper() for r in audited}:
        raise FairQuantError(f"explain.recipe {explained!r} is not among audit.recipes {recipe.audit.recipes}")
    mitigation = recipe.mitigation
    if mitigation is not None and mitigation.quantization_recipe is None and mitigation.quantization_budget is None:
        raise FairQuantError("recipe section 'mitigation' needs `quantization` (a preset, a recipe or 'auto:<budget>')")
    return audited


def dry_run(recipe: RunRecipe, *, overwrite: bool = False) -> str:
    """Check a recipe without loading data or models (no network) and describe what a run does.

    Checks the quantization presets and recipes, the output folder, a local model path, and —
    for a model built from ``config`` — that the mitigation recipe's patterns match its modules.
    """
    audited = _check_recipe(recipe, overwrite)
    mitigation = recipe.mitigation
    steps = []
    model = recipe.model.name_or_path or f"a new {recipe.model.config.get('model_type')} from config"
    source = recipe.data.source + (f" ({recipe.data.subset})" if recipe.data.subset else "")
    steps.append(f"data: {source}, groups by {', '.join(recipe.data.group_columns)}"
                 + (f", derived long tail {recipe.data.long_tail_classes}" if recipe.data.long_tail_classes else ""))
    steps.append(f"model: {model}" + (f", fine-tuned for {recipe.training.num_train_epochs:g} epoch(s)" if recipe.training else ""))
    steps.append(f"audit: FP + {', '.join(str(r) for r in audited) or 'nothing'}")
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
    _check_recipe(recipe, overwrite)
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
    counts = spec.counts(data)
    echo(f"groups by {spec.name}: " + "; ".join(f"{s}: {c}" for s, c in counts.items()))
    t = lap("data", t)
    if recipe.training is not None:
        model = train_fp_model(model, recipe.training, train, processing_class=tokenizer)
        t = lap("fp_training", t)
    model.eval()

    # ---------------------------------------------------------------- audit PTQ
    echo(f"[2/5] audit: {', '.join(map(str, recipe.audit.recipes)) or 'FP only'}")
    report = audit(
        model, evaluation, None, spec, calibration_dataset=train, config=recipe.audit, processing_class=tokenizer
    )
    t = lap("audit", t)

    # ---------------------------------------------------------------- explain the worst
    explanation = None
    explained = recipe.explain.recipe or _worst_recipe(report)
    if recipe.explain.enabled and explained is not None:
        from .diagnostics import explain

        echo(f"[3/5] explain {explained}")
        options = {f: getattr(recipe.explain, f) for f in field_names(ExplainConfig)}
        explanation = explain(
            model, explained.lower(), evaluation, spec, calibration_dataset=train, config=ExplainConfig(**options),
            processing_class=tokenizer,
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

    # ---------------------------------------------------------------- write, push
    echo("[5/5] write the output folder")
    timings["total"] = round(time.perf_counter() - started, 1)
    results = build_results(
        recipe, report, spec=spec, data=data, model=model, explanation=explanation, explained=explained,
        trainer=trainer, quantized=quantized, timings=timings, command=command,
    )
    write_outputs(
        out, results, fp_model=model if recipe.training is not None else None, quantized=quantized,
        processor=processor, explanation=explanation,
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
