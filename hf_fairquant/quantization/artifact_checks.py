"""Self-checking artifacts: the quantization map and the weights name each other's hash (quanto),
a torchao weights file records a hash of itself in its safetensors metadata (:func:`seal_weights`),
and ``hf_fairquant.json`` records a sha256 of every artifact file any backend wrote.

``quantization_map.json`` gets a reserved entry ``"__hf_fairquant__": {"weights_sha256": …}`` (a
content hash of every stored tensor: name, dtype, shape, bytes) and ``model.safetensors``' metadata
``hf_fairquant_qmap_sha256`` (a hash of the map's module entries). On load both are verified, then
every stored tensor's dtype and shape is compared with what the declared bits produce, so an
edited map (int4→int2, activations→none) or weights from another save fail with an
:class:`~hf_fairquant.errors.ArtifactError` naming the file, instead of loading as another model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import ArtifactError

#: The reserved quantization-map key holding the weights' content hash (not a module name).
QMAP_CHECK_KEY = "__hf_fairquant__"
#: The safetensors metadata key holding the quantization map's hash.
WEIGHTS_QMAP_HASH_KEY = "hf_fairquant_qmap_sha256"


def weights_hash(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (key order independent)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def qmap_hash(qmap: Mapping[str, Any]) -> str:
    """sha256 of the quantization map's module entries in canonical JSON."""
    modules = {k: v for k, v in qmap.items() if k != QMAP_CHECK_KEY}
    return hashlib.sha256(json.dumps(modules, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sign(qmap: dict[str, Any], state: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the map with the weights' hash, the safetensors metadata entry with the map's hash)."""
    signed = {**{k: v for k, v in qmap.items() if k != QMAP_CHECK_KEY}, QMAP_CHECK_KEY: {"weights_sha256": weights_hash(state)}}
    return signed, {WEIGHTS_QMAP_HASH_KEY: qmap_hash(signed)}


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path} is not valid JSON ({err}): the folder is damaged; save the model again") from None


def load_weights(weights_file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(weights_file))
    except Exception as err:  # safetensors' own error for a truncated or garbled file
        raise ArtifactError(
            f"{weights_file} is not a readable safetensors file ({err}): it is truncated or damaged; save the model again"
        ) from err


def weights_metadata(weights_file: Path) -> dict[str, str]:
    """The metadata of a safetensors file's header (an :class:`ArtifactError` naming the file if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights_file), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as err:
        raise ArtifactError(
            f"{weights_file} is not a readable safetensors file ({err}): it is truncated or damaged; save the model again"
        ) from err


#: safetensors metadata key of a weights file's hash of itself (its tensors and its other metadata), so a
#: folder without ``hf_fairquant.json`` still checks itself; plain transformers ignores the key.
SELF_HASH_KEY = "hf_fairquant_self_sha256"


def _self_hash(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    others = {k: v for k, v in metadata.items() if k != SELF_HASH_KEY}
    digest = hashlib.sha256(weights_hash(state).encode())
    digest.update(json.dumps(others, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def seal_weights(weights_file: Path) -> None:
    """Rewrite a safetensors file with :data:`SELF_HASH_KEY` in its metadata (tensors and the other
    metadata, e.g. torchao's tensor-subclass descriptions, kept as they were)."""
    from safetensors.torch import save_file

    state, metadata = load_weights(weights_file), weights_metadata(weights_file)
    save_file(state, str(weights_file), metadata={**metadata, SELF_HASH_KEY: _self_hash(state, metadata)})


def check_sealed(weights_file: Path) -> None:
    """A sealed file (see :func:`seal_weights`) holds what it recorded, else an :class:`ArtifactError`
    naming it; a file written elsewhere (no record) is only checked to be readable."""
    metadata = weights_metadata(weights_file)
    recorded = metadata.get(SELF_HASH_KEY)
    if recorded is None:
        return
    if _self_hash(load_weights(weights_file), metadata) != recorded:
        raise ArtifactError(
            f"{weights_file} differs from what it recorded when it was saved (its tensors or metadata were edited "
            "or damaged): refusing to load it; save the model again"
        )


def verify(qmap_file: Path, weights_file: Path, qmap: Any, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Check the map ↔ weights hashes; return the map's module entries."""
    from safetensors import safe_open

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


def check_layout(model: torch.nn.Module, state: Mapping[str, torch.Tensor], weights_file: Path) -> None:
    """Every stored tensor has the dtype and shape the declared bits give (``model``: freshly
    built, quantized as the map declares and frozen); missing or extra keys are errors too."""
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


def file_hashes(folder: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each named file's bytes (the artifact files a backend wrote)."""
    out = {}
    for name in sorted(names):
        digest = hashlib.sha256()
        with open(Path(folder) / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        out[name] = digest.hexdigest()
    return out


def verify_files(folder: Path, recorded: Any, meta_file: Path) -> None:
    """Every file ``hf_fairquant.json`` recorded is there, byte for byte (no new metadata beside old
    weights, no file from another save)."""
    if recorded is None:
        return  # a folder written before the record existed: the backend's own checks still run
    if not isinstance(recorded, dict):
        raise ArtifactError(f"{meta_file}: field 'files_sha256' must map file names to sha256, got {recorded!r}")
    missing = [n for n in recorded if not (Path(folder) / n).is_file()]
    if missing:
        raise ArtifactError(f"{meta_file} records {missing} but {folder} lacks them: the folder is incomplete")
    actual = file_hashes(folder, list(recorded))
    changed = [n for n in recorded if actual[n] != recorded[n]]
    if changed:
        raise ArtifactError(
            f"{', '.join(str(Path(folder) / n) for n in changed)} differ(s) from what {meta_file} records "
            "(edited, or written by another save): refusing to load a model that is neither"
        )
