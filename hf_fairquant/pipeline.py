"""Run a YAML recipe end to end: data → full-precision model (loaded or trained) → audit.

A recipe has the sections ``data`` (:class:`~hf_fairquant.data.DataConfig`), ``model``
(:class:`ModelSection`), ``training`` (``transformers.TrainingArguments`` fields; omit it to
audit a model as it is) and ``audit`` (:class:`AuditSection`). Each section is parsed with
``HfArgumentParser``; an unknown key is an error naming the key and its section.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._atomic import atomic_directory, atomic_write_text
from .data import DataConfig, check_image_size, load_grouped_dataset
from .groups import GroupSpec

DEFAULT_RECIPES = ["w8a8", "w4a8", "w4", "w2a8"]


@dataclass
class ModelSection:
    """The full-precision model: a Hub id / local folder, or a config to train from scratch."""

    name_or_path: str | None = field(default=None, metadata={"help": "Hub model id or local folder"})
    config: dict[str, Any] | None = field(default=None, metadata={"help": "transformers config kwargs incl. model_type"})


@dataclass
class AuditSection:
    """Which PTQ recipes to audit, and how."""

    recipes: list[str] = field(default_factory=lambda: list(DEFAULT_RECIPES))
    calibration_size: int = 512
    batch_size: int = 256
    n_boot: int = 1000
    confidence_level: float = 0.95
    seed: int = 0


@dataclass
class RunRecipe:
    data: DataConfig
    model: ModelSection
    audit: AuditSection
    training: Any = None  # transformers.TrainingArguments or None
    output_dir: str = "outputs/run"


_SECTIONS = {"data": DataConfig, "model": ModelSection, "audit": AuditSection}


def _parse_section(name: str, cls: type, values: Any) -> Any:
    from transformers import HfArgumentParser

    values = values or {}
    if not isinstance(values, dict):
        raise ValueError(f"recipe section '{name}' must be a mapping, got {type(values).__name__}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in recipe section '{name}'; allowed: {sorted(allowed)}")
    (parsed,) = HfArgumentParser(cls).parse_dict(values, allow_extra_keys=False)
    return parsed


def load_recipe(path: str | Path, output_dir: str | None = None) -> RunRecipe:
    """Parse a YAML recipe; ``output_dir`` overrides the recipe's."""
    from transformers import TrainingArguments

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    allowed = set(_SECTIONS) | {"training", "output_dir"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"unknown top-level key(s) {unknown} in recipe {path}; allowed: {sorted(allowed)}")
    sections = {name: _parse_section(name, cls, raw.get(name)) for name, cls in _SECTIONS.items()}
    out = output_dir or raw.get("output_dir") or f"outputs/{path.stem}"
    training = None
    if raw.get("training") is not None:
        train_cfg = {"output_dir": str(Path(out) / "checkpoints"), "report_to": "none", **raw["training"]}
        training = _parse_section("training", TrainingArguments, train_cfg)
    recipe = RunRecipe(training=training, output_dir=str(out), **sections)
    if recipe.model.name_or_path is None and recipe.model.config is None:
        raise ValueError("recipe section 'model' needs `name_or_path` or `config`")
    if recipe.model.name_or_path is None and training is None:
        raise ValueError("a model built from `config` must be trained: add a `training` section")
    return recipe


def _build_model(section: ModelSection, spec_labels: list[str], is_text: bool) -> Any:
    import transformers
    from transformers import AutoConfig

    auto = transformers.AutoModelForSequenceClassification if is_text else transformers.AutoModelForImageClassification
    id2label = dict(enumerate(spec_labels))
    if section.name_or_path is not None:
        return auto.from_pretrained(section.name_or_path)
    cfg = dict(section.config)
    model_type = cfg.pop("model_type", None)
    if model_type is None:
        raise ValueError("model.config needs a `model_type` (e.g. resnet, vit, distilbert)")
    config = AutoConfig.for_model(model_type, num_labels=len(spec_labels), id2label=id2label,
                                  label2id={v: k for k, v in id2label.items()}, **cfg)
    return auto.from_config(config)


def _processors(section: ModelSection, data: DataConfig) -> tuple[Any, Any]:
    """(image_processor, tokenizer) from the model's folder/Hub repo; None when it has none."""
    if section.name_or_path is None:
        return None, None
    from transformers import AutoImageProcessor, AutoTokenizer

    if data.text_column:
        return None, AutoTokenizer.from_pretrained(section.name_or_path)
    try:
        return AutoImageProcessor.from_pretrained(section.name_or_path), None
    except (OSError, ValueError):
        return None, None  # no preprocessor_config.json: the documented default transform


def train_fp_model(model: Any, args: Any, train_dataset: Any) -> Any:
    """Plain full-precision fine-tune with ``transformers.Trainer``."""
    from transformers import Trainer

    trainer = Trainer(model=model, args=args, train_dataset=train_dataset.with_format("torch"))
    trainer.train()
    return trainer.model


def run(recipe: RunRecipe, echo: Any = print) -> dict[str, Any]:
    """Execute a recipe; writes ``fp_model/``, ``audit.json`` and ``audit.md`` in its output dir."""
    from .audit import audit
    from .quantization import parse_recipes

    started = time.perf_counter()
    parse_recipes(recipe.audit.recipes)  # unknown presets fail before any work
    out = Path(recipe.output_dir)
    image_processor, tokenizer = _processors(recipe.model, recipe.data)
    data, spec = load_grouped_dataset(recipe.data, image_processor=image_processor, tokenizer=tokenizer)
    train, evaluation = data[recipe.data.train_split], data[recipe.data.eval_split]
    class_names = _class_names(train)
    if recipe.training is not None:  # the initial weights too: a run is reproducible across processes
        from transformers import set_seed

        set_seed(recipe.training.seed)
    model = _build_model(recipe.model, class_names, is_text=bool(recipe.data.text_column))
    for split, ds in ((recipe.data.train_split, train), (recipe.data.eval_split, evaluation)):
        spec.validate(ds, label_column="labels", num_labels=model.config.num_labels, split=split)
    check_image_size(model.config, evaluation)
    counts = spec.counts(data)
    echo(f"groups by {spec.name}: " + "; ".join(f"{s}: {c}" for s, c in counts.items()))

    if recipe.training is not None:
        model = train_fp_model(model, recipe.training, train)
    model.eval()
    with atomic_directory(out / "fp_model") as tmp:
        model.save_pretrained(tmp)
        for proc in (image_processor, tokenizer):
            if proc is not None:
                proc.save_pretrained(tmp)

    report = audit(
        model, evaluation, recipe.audit.recipes, spec, calibration_dataset=train,
        calibration_size=recipe.audit.calibration_size, batch_size=recipe.audit.batch_size,
        n_boot=recipe.audit.n_boot, confidence_level=recipe.audit.confidence_level, seed=recipe.audit.seed,
    )
    report.settings["wall_time_s"] = round(time.perf_counter() - started, 1)
    report.save(out / "audit.json")
    table = report.to_markdown()
    atomic_write_text(out / "audit.md", f"# Audit: {out.name}\n\n{table}")
    echo("\n" + table)
    echo(f"wrote {out / 'audit.json'}, {out / 'audit.md'} and {out / 'fp_model'} in {report.settings['wall_time_s']} s")
    return {"report": report, "model": model, "group_spec": spec, "output_dir": out}


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
    splits, spec = load_grouped_dataset(data, image_processor=image_processor, tokenizer=tokenizer)
    model = _build_model(section, _class_names(splits[data.train_split]), is_text=bool(data.text_column))
    return model.eval(), splits, spec
