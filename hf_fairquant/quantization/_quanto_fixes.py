"""A fix for optimum-quanto 0.2.7's QAT backward, applied when the backend is imported.

``QuantizedLinearFunction.backward`` flattens the output gradient with ``.view``; when that
gradient is not contiguous (BERT/DistilBERT: it comes from a transpose in attention) the
backward fails with "view size is not compatible with input tensor's size and stride".
``.reshape`` is the same operation where ``.view`` works and copies where it cannot.
"""

from __future__ import annotations

import torch
from optimum.quanto.tensor.function import QuantizedLinearFunction

_original_backward = QuantizedLinearFunction.backward


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


def apply() -> None:
    """Install the fixed backward (idempotent); subclasses that inherit it get it too."""
    QuantizedLinearFunction.backward = staticmethod(_backward)


def revert() -> None:
    """Restore optimum-quanto's own backward (tests use it to show the fix is needed)."""
    QuantizedLinearFunction.backward = staticmethod(_original_backward)
