"""Save and load a quantized model exactly: safetensors + quantization map + HF config.

Folder layout (loadable from a local path or a Hub repo id)::

    config.json               the transformers config (architectures names the class)
    model.safetensors         the state dict, quantized tensors flattened by optimum-quanto
    quantization_map.json     {module name: {"weights": "qint4", "activations": "qint8"|"none"}}
    hf_fairquant.json         format version, recipe, effective bits

optimum-quanto's ``requantize`` loads with ``strict=False``; here missing or unexpected keys
raise, so a truncated or mismatched checkpoint never loads silently.
"""

from __future__ import annotations

from ..errors import FairQuantError, MissingFileError

import json
from pathlib import Path
from typing import Any

import torch
from optimum.quanto import quantization_map
from safetensors.torch import load_file, save_file

from .._atomic import atomic_files
from .._paths import local_folder_or_hub_id
from .api import apply_plan, effective_bits, is_quantized
from .backends.quanto import layer_quant_of
from .recipe import LayerQuant, QuantRecipe

WEIGHTS_NAME = "model.safetensors"
QMAP_NAME = "quantization_map.json"
META_NAME = "hf_fairquant.json"
FORMAT_VERSION = 1


def save_quantized(
    model: torch.nn.Module, directory: str | Path, recipe: QuantRecipe | None = None, extra: dict | None = None
) -> Path:
    """Write a quantized transformers model to ``directory`` (each file via a temp name, renamed;
    other files in ``directory`` are kept).

    ``extra`` files (``{name: text}``, e.g. a model card ``README.md``) are written alongside.
    """
    if not is_quantized(model):
        raise FairQuantError("save_quantized expects a quantized model (call hf_fairquant.quantize first)")
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "save_pretrained"):
        raise FairQuantError(f"{type(model).__name__} has no transformers config: save_quantized needs a PreTrainedModel")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "recipe": recipe.to_dict() if recipe is not None else None,
        "effective_bits": effective_bits(model),
    }
    with atomic_files(directory) as tmp:
        config.architectures = [type(model).__name__]
        config.save_pretrained(tmp)
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "quantizer": "optimum-quanto"})
        (tmp / QMAP_NAME).write_text(json.dumps(quantization_map(model), indent=2, sort_keys=True))
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
    """Rebuild a model saved by :func:`save_quantized` (local folder or Hub repo id), in eval mode.

    Raises if files are missing or the state dict's keys differ from the model's.
    """
    from transformers import AutoConfig

    import transformers

    folder = _resolve(path_or_repo, revision, token)
    missing_files = [f for f in ("config.json", WEIGHTS_NAME, QMAP_NAME) if not (folder / f).is_file()]
    if missing_files:
        raise MissingFileError(f"{folder} lacks {missing_files}: not a folder written by save_quantized")
    config = AutoConfig.from_pretrained(folder)
    arch = (config.architectures or [None])[0]
    model_cls = getattr(transformers, arch, None) if arch else None
    if model_cls is None:
        raise FairQuantError(f"config.architectures of {folder} names {arch!r}, not a transformers model class")
    qmap = json.loads((folder / QMAP_NAME).read_text())
    state = load_file(str(folder / WEIGHTS_NAME))

    model = model_cls(config)
    plan = {}
    for name, q in qmap.items():
        try:
            model.get_submodule(name)
            plan[name] = layer_quant_of(q)
        except (AttributeError, KeyError, FairQuantError) as err:
            raise FairQuantError(f"quantization map entry {name!r}: {q} does not fit {arch} ({err})") from err
    apply_plan(model, plan)
    result = model.load_state_dict(state, strict=False)
    # quanto reports the missing parts of a flattened quantized weight in result.missing_keys;
    # anything else shows as a difference between the saved keys and the model's keys.
    loaded = set(model.state_dict())
    missing = sorted(set(result.missing_keys)) or sorted(loaded - set(state))
    unexpected = sorted(set(result.unexpected_keys) | (set(state) - loaded) if not result.missing_keys else set(result.unexpected_keys))
    if missing or unexpected:
        raise FairQuantError(
            f"state dict of {folder / WEIGHTS_NAME} does not match {arch}: "
            f"missing keys {missing[:8]}{'…' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{'…' if len(unexpected) > 8 else ''}"
        )
    return model.eval()


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The ``hf_fairquant.json`` of a saved folder (recipe, effective bits)."""
    return json.loads((Path(path) / META_NAME).read_text())
