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
import os
from pathlib import Path
from typing import Any

from ..data import BPE, WORDLEVEL, DataConfig, load_grouped_dataset, load_raw_grouped_dataset, preprocess_grouped_dataset
from ..data import text_length_limit, train_bpe_tokenizer, train_wordlevel_tokenizer
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


#: ``model.tokenizer`` values that train a tokenizer on the training split's text.
TRAINED_TOKENIZERS = (WORDLEVEL, BPE)
#: The byte-level BPE's vocabulary when ``model.config`` sets no ``vocab_size``.
BPE_VOCAB_SIZE = 8_000


def resolve_task(section: ModelSection, data: DataConfig, architecture: str | None = None) -> Task:
    """The run's task: ``model.task``, checked against the checkpoint's head; else the head's task;
    else (a model from ``config``) causal-lm for text without a label column, classification otherwise."""
    architecture = architecture or local_architecture(section)
    if section.task is not None:
        task = get_task(section.task)
        if architecture is not None:
            task.check_architecture(architecture, modality(data))
        return task
    if architecture is not None:
        return task_for_architecture(architecture)
    if data.text_column and data.label_column is None:
        return get_task("causal-lm")
    return get_task("classification")


def data_for_task(data: DataConfig, task: Task) -> DataConfig:
    """The data section as ``task`` reads it: a task without class labels (a causal LM, whose
    targets are its tokens) takes no label column, whatever the source's default was."""
    if task.uses_class_labels or data.label_column is None:
        return data
    return dataclasses.replace(data, label_column=None)


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
        config = from_hub_or_folder(AutoConfig.from_pretrained, section.name_or_path, "model")  # head checked before weights
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
        for special in ("bos_token_id", "eos_token_id"):  # what generate() and pipeline() read from the config
            if getattr(tokenizer, special, None) is not None:
                cfg.setdefault(special, getattr(tokenizer, special))
    config = AutoConfig.for_model(model_type, **task.config_kwargs(class_names), **cfg)
    return auto.from_config(config)


def from_hub_or_folder(load: Any, name: str, what: str, **kwargs: Any) -> Any:
    """``load(name, **kwargs)`` (a ``from_pretrained``), with a failure to reach a Hub id — offline,
    no such repo, gated — turned into a FairQuantError that names the id and what to do."""
    try:
        return load(name, **kwargs)
    except OSError as err:
        if Path(str(name)).expanduser().exists():
            raise  # a local folder that does not load is not a network problem
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0") else ""
        raise FairQuantError(
            f"{what} {name!r} is not a local folder, and loading it from the Hub failed{offline}: {err}. Give a local "
            "folder, or check the id, your network and your token (`hf auth login`)"
        ) from None


def processors(section: ModelSection, data: DataConfig) -> tuple[Any, Any]:
    """(image_processor, tokenizer) from the model's folder/Hub repo; None when it has none."""
    from transformers import AutoImageProcessor, AutoTokenizer

    if section.tokenizer not in (None, *TRAINED_TOKENIZERS) and data.text_column:
        return None, from_hub_or_folder(AutoTokenizer.from_pretrained, section.tokenizer, "tokenizer")
    if section.name_or_path is None:
        return None, None  # a WordLevel / BPE tokenizer is trained once the data is loaded (load_recipe_data)
    if data.text_column:
        return None, from_hub_or_folder(AutoTokenizer.from_pretrained, section.name_or_path, "model")
    try:
        return AutoImageProcessor.from_pretrained(section.name_or_path), None
    except (OSError, ValueError):
        return None, None  # no preprocessor_config.json: the documented default transform


def model_config(section: ModelSection) -> Any:
    """The model's transformers config before the model is built (for the text length limit)."""
    from transformers import AutoConfig

    if section.name_or_path is not None:
        return from_hub_or_folder(AutoConfig.from_pretrained, section.name_or_path, "model")
    cfg = dict(section.config or {})
    model_type = cfg.pop("model_type", None)
    return AutoConfig.for_model(model_type, **cfg) if model_type else None


def load_recipe_data(section: ModelSection, data: DataConfig, task: Task | None = None) -> tuple[Any, GroupSpec, Any, Any]:
    """The model-ready splits, the fitted GroupSpec, the tokenizer (or None) and the processor to
    publish beside the model: the model's own image processor or tokenizer, a tokenizer trained on
    the raw training split's text (``model.tokenizer: wordlevel`` for classifiers, ``bpe`` — byte-level
    BPE with ``model.config.vocab_size`` tokens, default 8,000 — for causal LMs), or the fitted
    default image transform as a processor. A task that encodes its raw rows itself (multiple choice)
    gets the splits as loaded (:class:`~hf_fairquant.inputs.GroupedInputs` encodes them with the tokenizer)."""
    image_processor, tokenizer = processors(section, data)
    raw, spec = load_raw_grouped_dataset(data)
    if task is not None and task.encodes_raw_rows:
        return raw, spec, tokenizer, tokenizer
    config = model_config(section) if data.text_column else None
    if tokenizer is None and section.tokenizer in TRAINED_TOKENIZERS and data.text_column:
        length = data.max_length or text_length_limit(None, config) or 128
        texts = raw[data.train_split][data.text_column][:]
        if section.tokenizer == BPE:
            vocab_size = (section.config or {}).get("vocab_size") or BPE_VOCAB_SIZE
            tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size, model_max_length=length)
        else:
            tokenizer = train_wordlevel_tokenizer(texts, model_max_length=length)
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
    if getattr(feature, "dtype", None) == "string":  # class names: the model's labels, in sorted order
        return sorted(set(train["labels"][:]))
    labels = train.with_format("numpy")["labels"][:]
    return [str(i) for i in range(int(labels.max()) + 1)]


def train_fp_model(model: Any, args: Any, train_dataset: Any, processing_class: Any = None, task: Task | None = None) -> Any:
    """Plain full-precision fine-tune (or pre-training) with ``transformers.Trainer``; the task's
    collator adds what the model learns from (a causal LM's labels: its own tokens)."""
    from transformers import Trainer

    from ..batching import default_collator

    inner = default_collator(processing_class)  # a tokenizer: DataCollatorWithPadding, batches padded dynamically
    collator = task.training_collator(inner) if task is not None else inner
    trainer = Trainer(  # the Trainer's own default collator unless the task adds one
        model=model, args=args, train_dataset=train_dataset.with_format("torch"), processing_class=processing_class,
        **({"data_collator": collator} if collator is not inner else {}),
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
    data = data_for_task(data, chosen)
    image_processor, tokenizer = processors(section, data)
    config = model_config(section) if data.text_column else None
    if chosen.encodes_raw_rows:  # encoded by GroupedInputs with the tokenizer (multiple choice)
        splits, spec = load_raw_grouped_dataset(data)
    else:
        splits, spec = load_grouped_dataset(data, image_processor=image_processor, tokenizer=tokenizer, model_config=config)
    model = build_model(section, class_names(splits[data.train_split]), modality(data), chosen)
    return model.eval(), splits, spec, tokenizer


@dataclasses.dataclass(frozen=True)
class PublishChoice:
    """The backend the mitigated model is trained and published with, and the modules kept float
    so that its artifact loads with plain transformers (``{name: why}``; empty: none)."""

    backend: str
    kept_float: dict[str, str] = dataclasses.field(default_factory=dict)

    def recipe(self, quant: Any) -> Any:
        """``quant`` compiled to this backend, the kept-float modules excluded."""
        exclude = tuple(quant.exclude) + tuple(n for n in self.kept_float if n not in quant.exclude)
        if quant.backend == self.backend and exclude == tuple(quant.exclude):
            return quant
        return dataclasses.replace(quant, backend=self.backend, exclude=exclude)


def publish_backend(choice: str, quant: Any, model: Any) -> PublishChoice:
    """The backend the mitigated model is trained and published with (``card.publish_backend``):
    ``auto`` picks a backend whose artifact plain transformers loads when it can quantize every
    planned module — or every one but small non-Linear modules (a ViT's patch embedding), which
    it then keeps float — and the recipe names no other backend; else the recipe's."""
    if choice != "auto":
        return PublishChoice(choice)
    if quant.backend != DEFAULT_BACKEND:
        return PublishChoice(quant.backend)
    found = publishable_with_transformers(model, quant.plan(model), quant)
    return PublishChoice(*found) if found is not None else PublishChoice(quant.backend)


def with_backend(args: Any, choice: PublishChoice) -> None:
    """Compile the mitigation recipe (``args.quantization``) to the chosen backend (the
    kept-float modules excluded)."""
    quant = args.quantization_recipe
    if quant is None:
        return
    compiled = choice.recipe(quant)
    if compiled is not quant:
        get_backend(choice.backend)  # a known one
        args.quantization = compiled.to_dict()
