"""Evaluation passes through ``torch.compile``, its compile time counted apart.

:class:`CompiledForward` calls a model through ``torch.compile(model)`` (the model itself is not
changed) and falls back to the eager model — for that call and every later one, with a warning —
when compilation fails (a module or tensor subclass the compiler does not handle). The seconds
spent compiling (TorchDynamo's own count, recompiles for new input shapes included) are
:attr:`CompiledForward.compile_s`, so a pass reports them apart from its evaluation time.
A module that says ``supports_torch_compile = False`` (a runtime session behind a torch
``forward``) runs eagerly.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch


def compile_seconds() -> float:
    """Seconds this process has spent in TorchDynamo/Inductor compilation so far."""
    try:
        from torch._dynamo.utils import calculate_time_spent

        return float(calculate_time_spent().get("entire_frame_compile", 0.0))
    except Exception:  # noqa: BLE001 - a private API: no count rather than no pass
        return 0.0


class CompiledForward:
    """``model(**inputs)`` through ``torch.compile`` when ``enabled`` (see the module doc)."""

    def __init__(self, model: torch.nn.Module, enabled: bool = True):
        self.model = model
        self.enabled = bool(enabled) and getattr(model, "supports_torch_compile", True)
        self.failed: str | None = None
        self._compiled = torch.compile(model) if self.enabled else None
        self._start = compile_seconds()

    def __call__(self, **inputs: Any) -> Any:
        if self._compiled is not None and self.failed is None:
            try:
                return self._compiled(**inputs)
            except Exception as err:  # noqa: BLE001 - compiler errors have many types; eager decides
                first = (str(err).strip().splitlines() or [""])[0][:200]
                self.failed = f"{type(err).__name__}: {first}"
                warnings.warn(f"torch.compile could not run {type(self.model).__name__} ({self.failed}); "
                              "evaluating it eagerly", RuntimeWarning, stacklevel=2)
        return self.model(**inputs)

    @property
    def compile_s(self) -> float:
        """Seconds spent compiling since this object was made (0 when not compiled)."""
        return max(0.0, compile_seconds() - self._start) if self.enabled else 0.0


__all__ = ["CompiledForward", "compile_seconds"]
