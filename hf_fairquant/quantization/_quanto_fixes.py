"""A fix for optimum-quanto 0.2.7's QAT backward, applied when a quanto module is first built.

``QuantizedLinearFunction.backward`` flattens the output gradient with ``.view``; when that
gradient is not contiguous (BERT/DistilBERT: it comes from a transpose in attention) the
backward fails with "view size is not compatible with input tensor's size and stride".
``.reshape`` is the same operation where ``.view`` works and copies where it cannot.

Under ``torch.inference_mode()`` its ``forward`` fails on int2/int4 weights with "Cannot set
version_counter for inference tensor": ``other.t()`` makes a view of a ``WeightQBitsTensor``
created outside inference mode whose data (quanto's fallback dequantizes) is an inference
tensor. quanto's fallback for ``t`` is ``dequantize().t()``; calling that directly inside
inference mode computes the same values without the view of the wrapper.

The patches are written against 0.2.7 (the pinned version): on another version it is not applied
and a warning says so, since the function it replaces may have changed.
"""

from __future__ import annotations

import contextlib
import warnings
from importlib.metadata import version
from typing import Iterator

import torch

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


def _forward(ctx, input, other, bias=None):  # noqa: A002 - quanto's names
    ctx.save_for_backward(input, other)
    if torch.is_inference_mode_enabled() and _is_qbits(other):
        other_t = other.dequantize().t()  # what quanto's fallback computes for other.t()
    else:
        other_t = other.t()
    output = torch.matmul(input, other_t)
    if bias is not None:
        output = output + bias
    return output


def _is_qbits(tensor: torch.Tensor) -> bool:
    from optimum.quanto.tensor.weights.qbits import WeightQBitsTensor

    return isinstance(tensor, WeightQBitsTensor)


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
    QuantizedLinearFunction.forward = staticmethod(_forward)
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
