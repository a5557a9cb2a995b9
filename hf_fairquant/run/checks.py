"""A run's checks, before the heavy work: one static pass over the recipe before anything loads
(:func:`check_recipe`), one after the data loads and before any model is built or trained
(:func:`check_data`).

The static pass reads no data and downloads nothing: it checks every option, the output folder,
the data source's name, the model path and config, the task against a local checkpoint's head,
and plans every quantization recipe (audit, explain, mitigation, export) against the model's
modules — built from its config on PyTorch's ``meta`` device, so a 0.5 B-parameter model costs no
memory — so a pattern that matches nothing fails here, not after FP training.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .._atomic import contains_cwd
from .._paths import local_folder_or_hub_id
from ..data import BPE, WORDLEVEL, DataConfig, check_subset
from ..errors import FairQuantError
from ..groups import GroupSpec
from ..tasks import Task
from .models import build_model, data_for_task, local_architecture, modality, publish_backend, resolve_task
from .recipe import ModelSection, RunRecipe

#: Free disk space a run needs beside its output folder, checked before any work (a full disk
#: would otherwise fail after every stage had run).
MIN_FREE_BYTES = 64 * 2**20


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
    parent = next((p for p in [out.expanduser().absolute().parent, *out.expanduser().absolute().parents] if p.exists()))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FairQuantError(
            f"output folder {out} cannot be written: {parent} is not writable (the folder is written beside it under a "
            f"temporary name, then renamed); choose another {option}"
        )
    free = shutil.disk_usage(parent).free
    if free < MIN_FREE_BYTES:
        raise FairQuantError(
            f"only {free / 2**20:.0f} MiB free on the disk of {parent}: a run writes models, plots and reports there "
            f"(at least {MIN_FREE_BYTES // 2**20} MiB needed); free some space or choose another {option}"
        )


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or below it (resolved)."""
    path, folder = path.expanduser().resolve(), folder.expanduser().resolve()
    return path == folder or folder in path.parents


def _check_model_path(section: ModelSection) -> None:
    """A local-looking path that does not exist is an error (not a Hub id to try)."""
    name = section.name_or_path
    if name is not None and not isinstance(name, str):
        raise FairQuantError(f"model.name_or_path must be a Hub model id or a local folder, got {name!r}")
    if section.config is not None and not isinstance(section.config, dict):
        raise FairQuantError(f"model.config must be a mapping of transformers config fields incl. model_type, got {section.config!r}")
    if name is not None:
        local_folder_or_hub_id(name)


def _check_model_config(section: ModelSection, data: DataConfig, task: Task) -> None:
    """A ``model.config`` builds a transformers config of a model of ``task`` for this data
    (the config only: no weights), so an unknown ``model_type`` or field fails here."""
    if section.name_or_path is not None or section.config is None:
        return
    import difflib

    import transformers
    from transformers import CONFIG_MAPPING, AutoConfig

    cfg = dict(section.config)
    model_type = cfg.pop("model_type", None)
    if not isinstance(model_type, str):
        raise FairQuantError(f"model.config needs a `model_type` string (e.g. resnet, vit, distilbert), got {model_type!r}")
    auto_name = task.auto_class(modality(data))
    mapping = getattr(transformers, auto_name)._model_mapping  # config class → model class, for this task
    if model_type not in CONFIG_MAPPING or CONFIG_MAPPING[model_type] not in mapping:
        allowed = [k for k in CONFIG_MAPPING if _in_mapping(CONFIG_MAPPING, k, mapping)]
        close = difflib.get_close_matches(model_type, allowed, n=3)
        raise FairQuantError(
            f"model.config.model_type {model_type!r} is not a transformers {task.pipeline_tag(modality(data))} model type"
            + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
            + f"; e.g. {', '.join(sorted(allowed)[:8])}, … (the task {task.name} builds {auto_name})"
        )
    try:
        AutoConfig.for_model(model_type, **cfg)
    except (ValueError, TypeError, AttributeError) as err:
        raise FairQuantError(f"model.config for {model_type!r} is not a valid config: {err}") from None


def _in_mapping(configs: Any, model_type: str, mapping: Any) -> bool:
    try:
        return configs[model_type] in mapping
    except (KeyError, ImportError, AttributeError):
        return False


def structure_model(recipe: RunRecipe, task: Task) -> Any:
    """The model's modules without its weights: built from ``model.config`` or a local folder's
    ``config.json`` on the ``meta`` device (no memory, no download); None for a Hub id (its config
    is not here)."""
    import torch

    section = recipe.model
    if section.name_or_path is not None and local_architecture(section) is None:
        return None
    import transformers
    from transformers import AutoConfig

    with torch.device("meta"):
        if section.name_or_path is not None:
            config = AutoConfig.from_pretrained(section.name_or_path)
            return getattr(transformers, task.auto_class(modality(recipe.data))).from_config(config)
        return build_model(section, ["0", "1"], modality(recipe.data), task)


def _plan_recipes(recipe: RunRecipe, audited: list[Any], task: Task) -> Any:
    """Every quantization recipe of the run planned against the model's modules (see
    :func:`structure_model`): a pattern matching nothing, an exclusion of everything, or a module
    the mitigation's backend cannot quantize fails now. Returns the structure (or None)."""
    model = structure_model(recipe, task)
    if model is None:
        return None
    for r in audited:
        r.plan(model)
    mitigation = recipe.mitigation
    if mitigation is not None and mitigation.quantization_recipe is not None:
        quant = mitigation.quantization_recipe
        quant.plan(model)
        from ..quantization import get_artifact, get_quantizer

        choice = publish_backend(recipe.card.publish_backend, quant, model)
        compiled = choice.recipe(quant)
        plan = compiled.plan(model)
        get_quantizer(choice.backend).configure(compiled).check(model, plan)
        get_artifact(choice.backend).check(model, plan)  # e.g. a torchao folder cannot hold Conv1D
    if recipe.export is not None:
        from ..deployment import check_exportable

        check_exportable(model, recipe.export.recipes)
    return model


def check_recipe(recipe: RunRecipe, overwrite: bool = False) -> list[Any]:
    """The one static check of a run, before any data or model is loaded (the section
    dataclasses have already checked each option's type and range as they were built): the
    quantization recipes (presets, bits, unique names that match their bits, each planned against
    the model's modules), the explained recipe, the mitigation's recipe and columns, the output
    folder, a local model path and its head against the task, the data source. Returns the audited
    PTQ recipes. The runner and :func:`~hf_fairquant.run.dry_run` call it once; :func:`check_data`
    does the checks that need the data."""
    from ..quantization import parse_recipes

    if recipe.audit.recipes is not None and not isinstance(recipe.audit.recipes, (list, tuple, str)):
        raise FairQuantError(f"audit.recipes must be a list of presets or recipe mappings, got {recipe.audit.recipes!r}")
    audited = parse_recipes(recipe.audit.recipes) if recipe.audit.recipes else []
    reserved = [str(r) for r in audited if str(r).upper().startswith("FAIR-QAT")]
    if reserved:
        raise FairQuantError(f"audit.recipes names {reserved} start with FAIR-QAT, the mitigated model's row; rename them")
    from ..quantization import publishable_backends

    publishable = ["auto", *publishable_backends()]
    if recipe.card.publish_backend not in publishable:
        raise FairQuantError(
            f"card.publish_backend {recipe.card.publish_backend!r} is not one of {publishable} (a backend that both "
            "quantizes the model and saves it)"
        )
    check_output_dir(recipe.output_dir, overwrite)
    _check_model_path(recipe.model)
    if recipe.model.tokenizer is not None and not recipe.data.text_column:
        raise FairQuantError("model.tokenizer applies to text data: set data.text_column (or drop model.tokenizer)")
    if recipe.data.text_column and recipe.model.name_or_path is None and recipe.model.tokenizer is None:
        raise FairQuantError(f"a text model from `config` needs a tokenizer: model.tokenizer: {WORDLEVEL} or {BPE} (trained "
                             "on the training split) or a tokenizer folder / Hub id")
    task = resolve_task(recipe.model, recipe.data)  # a local checkpoint's head against model.task
    recipe.data = data_for_task(recipe.data, task)  # a causal LM reads no label column
    if recipe.export is not None and not task.uses_class_labels:
        raise FairQuantError(
            f"export (ONNX Runtime artifacts audited as deployed) covers classifiers; the task {task.name!r} has no "
            "exported form here: drop the export section (torchao artifacts load with plain transformers)"
        )
    trained = [s for s in ("training", "mitigation") if getattr(recipe, s) is not None]
    if trained and not task.trainable:
        raise FairQuantError(
            f"recipe section(s) {trained}: the {task.name} task audits a model as it is and trains none; remove "
            f"{' and '.join(trained)} (audit and explain work)"
        )
    _check_model_config(recipe.model, recipe.data, task)
    _check_data_config(recipe.data)
    explained = recipe.explain.recipe
    if recipe.explain.enabled and explained and audited_recipe(audited, explained) is None:
        raise FairQuantError(
            f"explain.recipe {explained!r} is not among audit.recipes {[str(r) for r in audited]}"
        )
    if recipe.explain.enabled and explained and not audited_recipe(audited, explained).trainable:
        raise FairQuantError(
            f"explain.recipe {explained!r} is a transformers quantization config: explain measures gradients through "
            "straight-through quantized modules, which only the preset recipes have; name one of "
            f"{[str(r) for r in audited if r.trainable]}"
        )
    for path in recipe.audit.quantized_models:
        _check_quantized_checkpoint(path)
    for section in ("training", "mitigation"):
        if getattr(recipe, section) is not None:
            _check_training_arguments(section, getattr(recipe, section))
    if recipe.export is not None:
        from ..quantization import QuantRecipe
        from ..quantization.onnx.compile import check_recipe_bits

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
    _plan_recipes(recipe, audited, task)
    return audited


def _check_quantized_checkpoint(path: str) -> None:
    """A local pre-quantized checkpoint (``audit.quantized_models``, ``--quantized-model``) is one
    this machine can load (its format's package, a GPU): checked here, before anything loads. A
    Hub id is checked by the audit, before the full-precision pass (its config.json is fetched then)."""
    from .._paths import local_folder_or_hub_id
    from ..audit import check_loadable

    if isinstance(local_folder_or_hub_id(path, "audit.quantized_models entry"), Path):
        check_loadable(path, f"quantized model {path}")


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


def audited_recipe(audited: list[Any], name: str) -> Any:
    """The audited recipe named ``name`` (case-insensitive), or None."""
    return next((r for r in audited if str(r).upper() == str(name).upper()), None)


def _check_data_config(data: DataConfig) -> None:
    """The data section: a known offline source or something that can be a path or a Hub id."""
    from ..data import OFFLINE_SOURCES

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


def check_data(recipe: RunRecipe, data: Any, spec: GroupSpec, audited: list[Any], task: Task | None = None) -> None:
    """The checks that need the loaded splits (no model yet, no forward pass): the mitigation's
    group columns and sampling, calibration sizes against the number of groups, the explain sample
    against the smallest test group (in examples; a task scoring tokens is checked by explain, in
    tokens), group weights against the training groups."""
    from ..groups import check_enough_for_groups

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
    if m is not None and task is not None and not task.uses_class_labels and m.group_sampling in CLASS_SAMPLING:
        raise FairQuantError(
            f"mitigation.group_sampling={m.group_sampling!r} balances class labels, and the task {task.name!r} has none "
            "(its targets are the text's tokens): use group_balanced (or none)"
        )
    e = recipe.explain
    per_example = task is None or task.unit_name == "example"
    if per_example and e.enabled and audited and isinstance(e.examples_per_group, int) and not isinstance(e.examples_per_group, bool):
        test_counts = {g: c for g, c in counts[recipe.data.eval_split].items() if c > 0}
        small = {g: c for g, c in test_counts.items() if c < e.examples_per_group}
        if small:
            g, c = min(small.items(), key=lambda kv: kv[1])
            raise FairQuantError(
                f"explain.examples_per_group={e.examples_per_group} but the smallest group of split "
                f"'{recipe.data.eval_split}', {g!r}, has {c} example(s); use at most {c}, 'all' or null "
                "(every example up to 512)"
            )


#: Sampling modes that need class labels.
CLASS_SAMPLING = ("class_balanced", "group_class_balanced")


def check_max_length(data: DataConfig, model: Any) -> None:
    """An explicit ``max_length`` beyond the model's position embeddings fails before any work."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if data.text_column and data.max_length is not None and isinstance(limit, int) and data.max_length > limit:
        raise FairQuantError(
            f"data.max_length={data.max_length} exceeds the model's max_position_embeddings={limit}; "
            f"use --max-length {limit} or less (default: the smaller of the tokenizer's and the model's limit)"
        )


