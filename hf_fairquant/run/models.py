"""Building a run's models and processors: the task, the full-precision model (loaded or from a
config), its tokenizer / image processor, the data prepared for it, the FP fine-tune, the fair QAT.

The task decides the transformers class (``task.auto_class``): a checkpoint's own head
(``config.architectures``) picks it unless the recipe names one, and a head that does not fit the
named task is refused before anything loads.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..data import WORDLEVEL, DataConfig, load_grouped_dataset, load_raw_grouped_dataset, preprocess_grouped_dataset
from ..data import text_length_limit, train_wordlevel_tokenizer
from ..errors import FairQuantError
from ..groups import GroupSpec
from ..quantization import DEFAULT_BACKEND, get_backend, publishable_with_transformers
from ..tasks import Task, get_task, task_for_architecture
from .recipe import ModelSection


def modality(data: DataConfig) -> str:
    """``"text"`` for data with a text column, else ``"image"``."""
    return "text" if data.text_column else "image"


def local_architecture(section: ModelSection) -> str | None:
    """``config.architectures[0]`` of a local model folder, read from its ``config.json`` (no
    network, no weights); None for a Hub id or a model from ``config``."""
    name = section.name_or_path
    if not isinstance(name, str) or not (Path(name).expanduser() / "config.json").is_file():
        return None
    try:
        config = json.loads((Path(name).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FairQuantError(f"{name}/config.json is not readable JSON ({err})") from None
    architectures = config.get("architectures") or []
    return architectures[0] if architectures else None


def resolve_task(section: ModelSection, data: DataConfig, architecture: str | None = None) -> Task:
    """The run's task: ``model.task``, checked against the checkpoint's head; else the head's task;
    else (a model from ``config``) classification."""
    architecture = architecture or local_architecture(section)
    if section.task is not None:
        task = get_task(section.task)
        if architecture is not None:
            task.check_architecture(architecture, modality(data))
        return task
    if architecture is not None:
        return task_for_architecture(architecture)
    return get_task("classification")


def build_model(
    section: ModelSection, class_names: list[str], modality: str = "image", task: Task | str = "classification",
    tokenizer: Any = None,
) -> Any:
    """The full-precision model of ``task`` for data of ``modality`` (``"image"`` or ``"text"``):
    loaded from ``name_or_path``, or built from ``config`` (with the class names as labels and the
    tokenizer's vocabulary for text)."""
    import transformers
    from transformers import AutoConfig

    task = get_task(task)
    auto = getattr(transformers, task.auto_class(modality))
    if section.name_or_path is not None:
        config = AutoConfig.from_pretrained(section.name_or_path)  # the head is checked before any weight loads
        architecture = (getattr(config, "architectures", None) or [None])[0]
        if architecture is not None:
            task.check_architecture(architecture, modality)
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
    config = AutoConfig.for_model(model_type, **task.config_kwargs(class_names), **cfg)
    return auto.from_config(config)


def processors(section: ModelSection, data: DataConfig) -> tuple[Any, Any]:
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


def model_config(section: ModelSection) -> Any:
    """The model's transformers config before the model is built (for the text length limit)."""
    from transformers import AutoConfig

    if section.name_or_path is not None:
        return AutoConfig.from_pretrained(section.name_or_path)
    cfg = dict(section.config or {})
    model_type = cfg.pop("model_type", None)
    return AutoConfig.for_model(model_type, **cfg) if model_type else None


def load_recipe_data(section: ModelSection, data: DataConfig, task: Task | None = None) -> tuple[Any, GroupSpec, Any, Any]:
    """The model-ready splits, the fitted GroupSpec, the tokenizer (or None) and the processor to
    publish beside the model: the model's own image processor or tokenizer, a WordLevel tokenizer
    trained on the raw training split's text (``model.tokenizer: wordlevel``), or the fitted default
    image transform as a processor. A task that encodes its raw rows itself (multiple choice) gets
    the splits as loaded (:class:`~hf_fairquant.inputs.GroupedInputs` encodes them with the tokenizer)."""
    image_processor, tokenizer = processors(section, data)
    raw, spec = load_raw_grouped_dataset(data)
    if task is not None and task.encodes_raw_rows:
        return raw, spec, tokenizer, tokenizer
    config = model_config(section) if data.text_column else None
    if tokenizer is None and section.tokenizer == WORDLEVEL and data.text_column:
        length = data.max_length or text_length_limit(None, config) or 128
        tokenizer = train_wordlevel_tokenizer(raw[data.train_split][data.text_column][:], model_max_length=length)
    prepared, processor = preprocess_grouped_dataset(
        raw, data, image_processor=image_processor, tokenizer=tokenizer, model_config=config
    )
    return prepared, spec, tokenizer, processor


def class_names(train: Any) -> list[str]:
    """Class names from the ``labels`` ClassLabel feature, else ``"0".."K-1"`` (none for data without labels)."""
    feature = train.features.get("labels")
    if feature is None:
        return []
    if hasattr(feature, "names"):
        return list(feature.names)
    labels = train.with_format("numpy")["labels"][:]
    return [str(i) for i in range(int(labels.max()) + 1)]


def train_fp_model(model: Any, args: Any, train_dataset: Any, processing_class: Any = None) -> Any:
    """Plain full-precision fine-tune with ``transformers.Trainer``."""
    from transformers import Trainer

    trainer = Trainer(  # a tokenizer gives DataCollatorWithPadding: batches padded dynamically
        model=model, args=args, train_dataset=train_dataset.with_format("torch"), processing_class=processing_class
    )
    trainer.train()
    return trainer.model


def train_fair_qat(model: Any, args: Any, train: Any, task: Task, processing_class: Any = None) -> tuple[Any, Any]:
    """Fair QAT of a copy of ``model`` with :class:`~hf_fairquant.FairQuantTrainer`; returns
    (trainer, quantized model in eval mode)."""
    from ..training import FairQuantTrainer

    trainer = FairQuantTrainer(
        model=copy.deepcopy(model).train(), args=args, train_dataset=train, processing_class=processing_class, task=task
    )
    trainer.train()
    return trainer, trainer.model.eval()


def load_pretrained(name_or_path: str, data: DataConfig, task: str | None = None) -> tuple[Any, Any, GroupSpec, Any]:
    """A trained model (Hub id or local folder, eval mode), its grouped preprocessed splits and its
    tokenizer (or None), loaded as a run loads them (with the model's image processor/tokenizer)."""
    section = ModelSection(name_or_path=name_or_path, task=task)
    chosen = resolve_task(section, data)
    image_processor, tokenizer = processors(section, data)
    config = model_config(section) if data.text_column else None
    if chosen.encodes_raw_rows:  # encoded by GroupedInputs with the tokenizer (multiple choice)
        splits, spec = load_raw_grouped_dataset(data)
    else:
        splits, spec = load_grouped_dataset(data, image_processor=image_processor, tokenizer=tokenizer, model_config=config)
    model = build_model(section, class_names(splits[data.train_split]), modality(data), chosen)
    return model.eval(), splits, spec, tokenizer


def publish_backend(choice: str, quant: Any, model: Any) -> str:
    """The backend the mitigated model is trained and published with (``card.publish_backend``):
    ``auto`` picks a backend whose artifact plain transformers loads, when it can quantize every
    planned module and the recipe names no other backend; else the recipe's."""
    if choice != "auto":
        return choice
    if quant.backend != DEFAULT_BACKEND:
        return quant.backend
    return publishable_with_transformers(model, quant.plan(model), quant) or quant.backend


def with_backend(args: Any, backend: str) -> None:
    """Compile the mitigation recipe (``args.quantization``) to ``backend``."""
    quant = args.quantization_recipe
    if quant is not None and quant.backend != backend:
        get_backend(backend)  # a known one
        args.quantization = dataclasses.replace(quant, backend=backend).to_dict()
