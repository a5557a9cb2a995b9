"""An ONNX Runtime session that looks like a torch classifier to the audit.

:class:`OrtModel` is a ``torch.nn.Module`` whose ``forward`` takes the graph's inputs by name
(``pixel_values`` or ``input_ids``/``attention_mask``; its signature lists them, so
:func:`~hf_fairquant.batching.model_input_names` picks the dataset columns) and returns an object
with ``.logits`` (a torch tensor): ``audit(..., quantized_models=...)``, ``predict`` and the
``group_disparity`` metric take it unchanged. The ONNX Runtime backend recognises it, so
``is_quantized``, ``effective_bits`` and ``model_size_bytes`` describe the file that ships.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from ...errors import ArtifactError
from ..backends import onnxruntime as _backend  # noqa: F401  registers the ONNX Runtime backend
from .export import METADATA_KEY, ONNX_DIR, QUANTIZED_FILE


class OrtModel(torch.nn.Module):
    """``InferenceSession(path, providers=["CPUExecutionProvider"])`` behind a torch forward."""

    #: what the ONNX Runtime backend recognises (see :mod:`..backends.onnxruntime`)
    is_onnxruntime_model = True
    #: a runtime session, not a torch graph: evaluation passes never ``torch.compile`` it
    supports_torch_compile = False

    def __init__(self, path: str | Path, *, num_threads: int | None = None, config: Any = None):
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"no ONNX model at {self.path}")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.metadata: dict[str, Any] = json.loads(raw) if raw else {}
        self.config = config

        def forward(**inputs: torch.Tensor) -> SequenceClassifierOutput:
            return self._run(inputs)

        forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in self.input_names]
        )
        self.forward = forward  # an instance attribute: nn.Module.__call__ runs it

    def _run(self, inputs: dict[str, Any]) -> SequenceClassifierOutput:
        missing = [n for n in self.input_names if inputs.get(n) is None]
        if missing:
            raise ArtifactError(f"{self.path.name} needs inputs {self.input_names}; missing {missing}")
        feeds = {n: _numpy(inputs[n]) for n in self.input_names}
        (logits,) = self.session.run(["logits"], feeds)
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))

    @property
    def recipe(self) -> dict[str, Any] | None:
        return self.metadata.get("recipe")

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the ONNX file (and its external data, if any)."""
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))

    def __deepcopy__(self, memo: dict) -> "OrtModel":
        return OrtModel(self.path, config=self.config)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, inputs={self.input_names}"


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def load_onnx(path_or_dir: str | Path, file_name: str = QUANTIZED_FILE, **kwargs: Any) -> OrtModel:
    """An :class:`OrtModel` from an ``.onnx`` file, or from ``DIR/onnx/<file_name>`` of an
    exported folder."""
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / ONNX_DIR / file_name if (path / ONNX_DIR).is_dir() else path / file_name
    return OrtModel(path, **kwargs)
