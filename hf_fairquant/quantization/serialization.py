"""Save and load a quantized model exactly, whichever backend quantized it.

:func:`save_quantized` asks the artifact format of the model's backend (:func:`~.backends.quantizer_of`)
to write it, then adds ``hf_fairquant.json`` (format version, backend, recipe, effective bits) and
any extra files; :func:`load_quantized` asks the artifact format the folder holds. The built-in
formats, both loadable from a local path or a Hub repo id:

- torchao: a transformers ``save_pretrained`` folder whose ``config.json`` carries a
  ``TorchAoConfig``; plain ``AutoModelFor*.from_pretrained`` loads it too (torchao installed).
- optimum-quanto: ``config.json`` + ``model.safetensors`` (quantized tensors flattened by
  optimum-quanto) + ``quantization_map.json``. Its ``config.json`` carries a ``quantization_config``
  that plain transformers refuses loudly (it names ``hf_fairquant.load_quantized``) rather than
  loading random weights; here missing or unexpected keys raise. The folder checks itself
  (:mod:`~hf_fairquant.quantization.artifact_checks`): the map carries a hash of the weights, the
  weights' metadata a hash of the map, and every tensor must have the shape its declared bits give.

Saving over an existing folder swaps the whole folder (written under a temporary name; files
that are not part of the artifact, e.g. a card or checkpoints, are carried over), so an
interrupted save leaves the previous model whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_directory, contains_cwd
from .._paths import local_folder_or_hub_id
from ..errors import ArtifactError, FairQuantError, MissingFileError
from .api import effective_bits
from .artifact_checks import file_hashes, verify_files
from .backends import (
    artifact_for_folder,
    available_backends,
    get_artifact,
    get_backend,
    quantizer_of,
)
from .backends import artifact_for_folder as get_artifact_of_folder
from .recipe import QuantRecipe

META_NAME = "hf_fairquant.json"
FORMAT_VERSION = 1


def _artifact_files(folder: Path, saving: str) -> set[str]:
    """Files a backend's save writes — the saving backend's, and the one that wrote ``folder``
    before (its ``hf_fairquant.json``): replaced on a re-save, never carried over."""
    names = {saving}
    if (folder / META_NAME).is_file():
        try:
            previous = json.loads((folder / META_NAME).read_text()).get("backend")
        except (ValueError, AttributeError):
            previous = None
        if previous in available_backends():
            names.add(previous)
    files = {f for n in names if (a := get_backend(n).artifact) is not None for f in a.artifact_files()}
    return files | _MODEL_FILES


#: Files of any saved transformers model folder (replaced on a re-save, never carried over).
_MODEL_FILES = {"config.json", "generation_config.json", META_NAME, "model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin"}


def _is_artifact_file(name: str, artifact_files: set[str]) -> bool:
    return name in artifact_files or (name.startswith("model-") and name.endswith(".safetensors"))


def _is_model_folder(folder: Path) -> bool:
    """A folder some save wrote: it holds a model's config or weights."""
    return folder.is_dir() and any((folder / name).is_file() for name in ("config.json", META_NAME, "model.safetensors"))


def check_save_target(directory: Path, backend: str) -> None:
    """The folder ``save_quantized`` replaces whole must not be a file, nor a file's name inside a
    saved model folder (``save_quantized(q, folder / "config.json")`` would turn the config into a
    folder, and ``folder`` would no longer load)."""
    if directory.exists() and not directory.is_dir():
        raise FairQuantError(
            f"save_quantized writes a folder, but {directory} is an existing file; give a folder "
            f"(e.g. {directory.parent / 'quantized'})"
        )
    if _is_artifact_file(directory.name, _artifact_files(directory.parent, backend)) and _is_model_folder(directory.parent):
        raise FairQuantError(
            f"save_quantized writes a folder, but {directory} is named like a file of the saved model in "
            f"{directory.parent}; give the folder itself ({directory.parent}) or a new one beside it"
        )


def save_quantized(
    model: torch.nn.Module, directory: str | Path, recipe: QuantRecipe | None = None, extra: dict | None = None
) -> Path:
    """Write a quantized transformers model to ``directory``: the folder is written under a
    temporary name and swapped in whole; files already there that are not part of the artifact
    (a card, a processor, checkpoints) are carried over.

    ``extra`` files (``{name: text}``, e.g. a model card ``README.md``) are written alongside.
    """
    quantizer = quantizer_of(model)
    if quantizer is None:
        raise FairQuantError("save_quantized expects a quantized model (call hf_fairquant.quantize first)")
    artifact = get_artifact(quantizer.name)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "save_pretrained"):
        raise FairQuantError(f"{type(model).__name__} has no transformers config: save_quantized needs a PreTrainedModel")
    meta = {
        "format_version": FORMAT_VERSION,
        "backend": quantizer.name,
        "recipe": recipe.to_dict() if recipe is not None else None,
        "effective_bits": effective_bits(model),
    }
    directory = Path(directory)
    check_save_target(directory, quantizer.name)
    if contains_cwd(directory):
        raise FairQuantError(f"save_quantized replaces {directory} whole, and it is (or contains) the working folder; "
                             "save into a subfolder")
    replaced = _artifact_files(directory, quantizer.name) if directory.is_dir() else set()
    carried = [p.name for p in directory.iterdir() if not _is_artifact_file(p.name, replaced)] if directory.is_dir() else []
    with atomic_directory(directory, keep=carried) as tmp:  # the whole folder is swapped
        artifact.save(model, tmp, recipe)
        meta["files_sha256"] = file_hashes(tmp, [p.name for p in tmp.iterdir() if p.is_file()])  # checked on load
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2))
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
    return Path(directory)


def _resolve(path_or_repo: str | Path, revision: str | None, token: str | None) -> Path:
    """A local folder, else a Hub repo snapshot. A name that is clearly local (see
    :func:`~hf_fairquant._paths.local_folder_or_hub_id`; also one that is no valid repo id, or
    whose parent folder exists here) is a :class:`MissingFileError` without any network access;
    a Hub failure is an :class:`ArtifactError` that says both readings."""
    where = local_folder_or_hub_id(path_or_repo, "quantized model")
    if isinstance(where, Path):
        if not where.is_dir():
            raise MissingFileError(f"{where} is a file, not a folder written by save_quantized")
        return where
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(where)
        valid_repo_id = True
    except HFValidationError:
        valid_repo_id = False
    parent = Path(where).parent
    if not valid_repo_id or ("/" in where and str(parent) not in ("", ".") and parent.is_dir()):
        raise MissingFileError(
            f"quantized model folder {where} does not exist (give a folder written by save_quantized, "
            "or a Hub repo id like user/model)"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(where, revision=revision, token=token))
    except Exception as err:  # offline, not found, gated: one error that says both readings
        raise ArtifactError(
            f"{where} is not a local folder, and loading it as a Hub repo failed ({type(err).__name__}: {err})"
        ) from err


def load_quantized(path_or_repo: str | Path, revision: str | None = None, token: str | None = None) -> torch.nn.Module:
    """Rebuild a model saved by :func:`save_quantized` (local folder or Hub repo id), in eval mode,
    with the backend that wrote it. Raises if files are missing or the weights do not fit."""
    folder = _resolve(path_or_repo, revision, token)
    named = None
    if (folder / META_NAME).is_file():
        meta = load_metadata(folder)
        verify_files(folder, meta.get("files_sha256"), folder / META_NAME)
        named = meta.get("backend")
    artifact = get_artifact(named) if named else artifact_for_folder(folder)
    return artifact.load(folder)


def load_quantized_checkpoint(path_or_repo: str | Path, model_class: type | None = None) -> torch.nn.Module:
    """Any quantized checkpoint: a folder written by :func:`save_quantized` (through its backend),
    else a pre-quantized transformers checkpoint (``config.json`` declaring a
    ``quantization_config``: torchao, bitsandbytes, …) loaded with ``from_pretrained`` as
    ``model_class`` — after checking, before any weight loads, that this machine can load its
    format (GPTQ, AWQ, compressed-tensors need packages and a GPU: refused with what they need)."""
    from .backends import load_pre_quantized

    where = local_folder_or_hub_id(path_or_repo, "quantized model")
    if isinstance(where, Path) and ((where / META_NAME).is_file() or _any_artifact(where)):
        return load_quantized(where)
    return load_pre_quantized(where, model_class)


def _any_artifact(folder: Path) -> bool:
    """A folder one of this package's own formats wrote (e.g. quanto's quantization map)."""
    try:
        return not get_artifact_of_folder(folder).publishing.loads_with_transformers
    except MissingFileError:
        return False


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The ``hf_fairquant.json`` of a saved folder (backend, recipe, effective bits)."""
    from .artifact_checks import read_json

    file = Path(path) / META_NAME
    if not file.is_file():
        raise MissingFileError(f"{file} not found: not a folder written by save_quantized")
    meta = read_json(file)
    if not isinstance(meta, dict):
        raise ArtifactError(f"{file} must hold a JSON object (format_version, backend, recipe, effective_bits)")
    return meta
