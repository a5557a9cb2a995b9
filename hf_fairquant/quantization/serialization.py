"""Save and load a quantized model exactly, whichever backend quantized it.

:func:`save_quantized` asks the model's backend (:func:`~.backends.backend_of`) to write its
artifact, then adds ``hf_fairquant.json`` (format version, backend, recipe, effective bits) and
any extra files; :func:`load_quantized` asks the backend whose artifact the folder holds. Two
formats, both loadable from a local path or a Hub repo id:

- torchao: a transformers ``save_pretrained`` folder whose ``config.json`` carries a
  ``TorchAoConfig``; plain ``AutoModelFor*.from_pretrained`` loads it too (torchao installed).
- optimum-quanto: ``config.json`` + ``model.safetensors`` (quantized tensors flattened by
  optimum-quanto) + ``quantization_map.json``. Its ``config.json`` carries a ``quantization_config``
  that plain transformers refuses loudly (it names ``hf_fairquant.load_quantized``) rather than
  loading random weights; here missing or unexpected keys raise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_files
from .._paths import local_folder_or_hub_id
from ..errors import FairQuantError, MissingFileError
from .api import effective_bits
from .backends import backend_for_folder, backend_of, get_backend
from .recipe import QuantRecipe

META_NAME = "hf_fairquant.json"
FORMAT_VERSION = 1
# the optimum-quanto file names (kept importable here)
WEIGHTS_NAME = "model.safetensors"
QMAP_NAME = "quantization_map.json"


def save_quantized(
    model: torch.nn.Module, directory: str | Path, recipe: QuantRecipe | None = None, extra: dict | None = None
) -> Path:
    """Write a quantized transformers model to ``directory`` (each file via a temp name, renamed;
    other files in ``directory`` are kept).

    ``extra`` files (``{name: text}``, e.g. a model card ``README.md``) are written alongside.
    """
    backend = backend_of(model)
    if backend is None:
        raise FairQuantError("save_quantized expects a quantized model (call hf_fairquant.quantize first)")
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "save_pretrained"):
        raise FairQuantError(f"{type(model).__name__} has no transformers config: save_quantized needs a PreTrainedModel")
    meta = {
        "format_version": FORMAT_VERSION,
        "backend": backend.name,
        "recipe": recipe.to_dict() if recipe is not None else None,
        "effective_bits": effective_bits(model),
    }
    with atomic_files(directory) as tmp:
        backend.save(model, tmp, recipe)
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2))
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
    return Path(directory)


def _resolve(path_or_repo: str | Path, revision: str | None, token: str | None) -> Path:
    where = local_folder_or_hub_id(path_or_repo, "quantized model")
    if isinstance(where, Path):
        if not where.is_dir():
            raise MissingFileError(f"{where} is not a folder of a quantized model")
        return where
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(where, revision=revision, token=token))


def load_quantized(path_or_repo: str | Path, revision: str | None = None, token: str | None = None) -> torch.nn.Module:
    """Rebuild a model saved by :func:`save_quantized` (local folder or Hub repo id), in eval mode,
    with the backend that wrote it. Raises if files are missing or the weights do not fit."""
    folder = _resolve(path_or_repo, revision, token)
    named = None
    if (folder / META_NAME).is_file():
        named = json.loads((folder / META_NAME).read_text()).get("backend")
    backend = get_backend(named) if named else backend_for_folder(folder)
    return backend.load(folder)


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The ``hf_fairquant.json`` of a saved folder (backend, recipe, effective bits)."""
    return json.loads((Path(path) / META_NAME).read_text())
