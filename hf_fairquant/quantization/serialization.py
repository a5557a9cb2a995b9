"""Save and load a quantized model exactly: safetensors + quantization map + HF config.

Folder layout (loadable from a local path or a Hub repo id)::

    config.json               the transformers config (architectures names the class)
    model.safetensors         the state dict, quantized tensors flattened by optimum-quanto
    quantization_map.json     {module name: {"weights": "qint4", "activations": "qint8"|"none"},
                               "__hf_fairquant__": {"weights_sha256": <content hash of the tensors>}}
    hf_fairquant.json         format version, recipe, effective bits

The folder is self-checking: the map carries a content hash of the weights and the weights'
safetensors metadata a hash of the map, so an edited map (int4→int2, activations→none) or
weights from another save fail to load (:class:`~hf_fairquant.errors.ArtifactError` naming the
file); every stored tensor's dtype and shape must be those the declared bits produce.
optimum-quanto's ``requantize`` loads with ``strict=False``; here missing or unexpected keys
raise, so a truncated or mismatched checkpoint never loads silently. Saving over an existing
folder replaces it whole (other files in it are carried over).
"""

from __future__ import annotations

from ..errors import ArtifactError, FairQuantError, MissingFileError

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from optimum.quanto import quantization_map
from safetensors.torch import load_file, save_file

from .._atomic import atomic_directory, contains_cwd
from .._paths import local_folder_or_hub_id
from .api import apply_plan, effective_bits, freeze, is_quantized
from .backends.quanto import layer_quant_of
from .recipe import LayerQuant, QuantRecipe

WEIGHTS_NAME = "model.safetensors"
QMAP_NAME = "quantization_map.json"
META_NAME = "hf_fairquant.json"
FORMAT_VERSION = 2
#: The reserved quantization-map key holding the weights' content hash (not a module name).
QMAP_CHECK_KEY = "__hf_fairquant__"
#: The safetensors metadata key holding the quantization map's hash.
WEIGHTS_QMAP_HASH_KEY = "hf_fairquant_qmap_sha256"
#: The files save_quantized owns in its folder; anything else there is carried over on a re-save.
ARTIFACT_FILES = ("config.json", WEIGHTS_NAME, QMAP_NAME, META_NAME)


# ---------------------------------------------------------------------------- self-checks
def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (key order independent)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def qmap_hash(qmap: dict[str, Any]) -> str:
    """sha256 of the quantization map's module entries in canonical JSON."""
    modules = {k: v for k, v in qmap.items() if k != QMAP_CHECK_KEY}
    return hashlib.sha256(json.dumps(modules, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path} is not valid JSON ({err}): the folder is damaged; save the model again") from None


def _verify_hashes(folder: Path, qmap: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Check the map ↔ weights hashes; return the module entries of the map."""
    from safetensors import safe_open

    qmap_file, weights_file = folder / QMAP_NAME, folder / WEIGHTS_NAME
    if not isinstance(qmap, dict):
        raise ArtifactError(f"{qmap_file} must hold a JSON object {{module: {{weights, activations}}}}, got {type(qmap).__name__}")
    check = qmap.get(QMAP_CHECK_KEY)
    if not isinstance(check, dict) or not isinstance(check.get("weights_sha256"), str):
        raise ArtifactError(
            f"{qmap_file} has no {QMAP_CHECK_KEY}.weights_sha256 (written by an older hf_fairquant, or edited): "
            "the weights cannot be verified; save the model again with save_quantized"
        )
    with safe_open(str(weights_file), framework="pt") as fh:
        stored_map_hash = (fh.metadata() or {}).get(WEIGHTS_QMAP_HASH_KEY)
    if stored_map_hash != qmap_hash(qmap):
        raise ArtifactError(
            f"{qmap_file} does not match {weights_file} (the weights record another quantization map: "
            "the map was edited, or the files come from different saves)"
        )
    if check["weights_sha256"] != weights_hash(state):
        raise ArtifactError(
            f"{weights_file} does not match {qmap_file} (its tensors differ from the ones saved with this map: "
            "the weights were edited, or the files come from different saves)"
        )
    return {k: v for k, v in qmap.items() if k != QMAP_CHECK_KEY}


def _check_layout(model: torch.nn.Module, state: dict[str, torch.Tensor], weights_file: Path) -> None:
    """Every stored tensor has the dtype and shape the declared bits give (``model`` is the
    freshly built, quantized and frozen model); missing or extra keys are errors too."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ArtifactError(
            f"state dict of {weights_file} does not match {type(model).__name__}: "
            f"missing keys {missing[:8]}{'…' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{'…' if len(unexpected) > 8 else ''}"
        )
    wrong = [
        f"{k}: stored {state[k].dtype} {tuple(state[k].shape)}, declared {expected[k].dtype} {tuple(expected[k].shape)}"
        for k in sorted(state) if state[k].dtype != expected[k].dtype or state[k].shape != expected[k].shape
    ]
    if wrong:
        raise ArtifactError(
            f"{len(wrong)} tensor(s) of {weights_file} do not have the dtype/shape the quantization map's bits give: "
            + "; ".join(wrong[:4]) + ("…" if len(wrong) > 4 else "")
        )


def save_quantized(
    model: torch.nn.Module, directory: str | Path, recipe: QuantRecipe | None = None, extra: dict | None = None
) -> Path:
    """Write a quantized transformers model to ``directory``: the folder is written under a
    temporary name and swapped in whole (other files already in ``directory`` are carried over),
    so an interrupted save leaves the previous folder intact.

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
    directory = Path(directory)
    if contains_cwd(directory):
        raise FairQuantError(f"save_quantized replaces {directory} whole, and it is (or contains) the working folder; "
                             "save into a subfolder")
    qmap = quantization_map(model)
    qmap[QMAP_CHECK_KEY] = {"weights_sha256": weights_hash(state)}
    carried = [p.name for p in directory.iterdir() if p.name not in ARTIFACT_FILES] if directory.is_dir() else []
    with atomic_directory(directory, keep=carried) as tmp:  # the whole folder is swapped
        config.architectures = [type(model).__name__]
        config.save_pretrained(tmp)
        metadata = {"format": "pt", "quantizer": "optimum-quanto", WEIGHTS_QMAP_HASH_KEY: qmap_hash(qmap)}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata=metadata)
        (tmp / QMAP_NAME).write_text(json.dumps(qmap, indent=2, sort_keys=True))
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
        raise ArtifactError(f"config.architectures of {folder / 'config.json'} names {arch!r}, not a transformers model class")
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except Exception as err:  # safetensors' own error for a truncated/garbled file
        raise ArtifactError(f"{folder / WEIGHTS_NAME} is not a readable safetensors file ({err})") from err
    qmap = _verify_hashes(folder, _read_json(folder / QMAP_NAME), state)

    model = model_cls(config)
    plan = {}
    for name, q in qmap.items():
        try:
            model.get_submodule(name)
            plan[name] = layer_quant_of(q)
        except (AttributeError, KeyError, FairQuantError) as err:
            raise ArtifactError(f"{folder / QMAP_NAME}: entry {name!r}: {q} does not fit {arch} ({err})") from err
    apply_plan(model, plan)
    freeze(model)  # the frozen layout is what the declared bits store: compare before loading
    _check_layout(model, state, folder / WEIGHTS_NAME)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ArtifactError(
            f"state dict of {folder / WEIGHTS_NAME} does not load into {arch}: missing keys "
            f"{sorted(result.missing_keys)[:8]}, unexpected keys {sorted(result.unexpected_keys)[:8]}"
        )
    return model.eval()


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The ``hf_fairquant.json`` of a saved folder (recipe, effective bits)."""
    file = Path(path) / META_NAME
    if not file.is_file():
        raise ArtifactError(f"{file} not found: not a folder written by save_quantized")
    return _read_json(file)
