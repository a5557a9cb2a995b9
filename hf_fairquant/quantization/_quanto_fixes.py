"""A fix for optimum-quanto 0.2.7's QAT backward, applied when a quanto module is first built.

``QuantizedLinearFunction.backward`` flattens the output gradient with ``.view``; when that
gradient is not contiguous (BERT/DistilBERT: it comes from a transpose in attention) the
backward fails with "view size is not compatible with input tensor's size and stride".
``.reshape`` is the same operation where ``.view`` works and copies where it cannot.

The patch is written against 0.2.7 (the pinned version): on another version it is not applied
and a warning says so, since the function it replaces may have changed.
"""

from __future__ import annotations

import contextlib
import warnings
from importlib.metadata import version

import torch
from typing import Iterator

PATCHED_VERSION = "0.2.7"
_state = {"applied": False, "original": None}


def _backward(ctx, gO):  # noqa: N803 - the name quanto uses
    input_gO = other_gO = bias_gO = None
    input, other = ctx.saved_tensors
    out_features, in_features = other.shape
    if ctx.needs_input_grad[0]:
        input_gO = torch.matmul(gO, other)
    if ctx.needs_input_grad[1]:
        other_gO = torch.matmul(gO.reshape(-1, out_features).t(), input.reshape(-1, in_features))
    if ctx.needs_input_grad[2]:
        bias_gO = gO.sum(tuple(range(gO.ndim - 1)))
    return input_gO, other_gO, bias_gO


def apply() -> bool:
    """Install the fixed backward once (idempotent); returns whether it is installed."""
    if _state["applied"]:
        return True
    installed = version("optimum-quanto")
    if installed != PATCHED_VERSION:
        warnings.warn(
            f"optimum-quanto {installed} is installed; hf_fairquant's QAT backward fix is written for "
            f"{PATCHED_VERSION} and is not applied (QAT of BERT-style models may fail)",
            RuntimeWarning,
            stacklevel=2,
        )
        _state["applied"] = True  # warn once
        return False
    from optimum.quanto.tensor.function import QuantizedLinearFunction

    _state["original"] = QuantizedLinearFunction.backward
    QuantizedLinearFunction.backward = staticmethod(_backward)
    _state["applied"] = True
    return True


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """optimum-quanto's own backward inside the block (tests use it to show the fix is needed)."""
    from optimum.quanto.tensor.function import QuantizedLinearFunction

    apply()
    original, fixed = _state["original"], QuantizedLinearFunction.backward
    if original is not None:
        QuantizedLinearFunction.backward = staticmethod(original)
    try:
        yield
    finally:
        QuantizedLinearFunction.backward = fixed
