"""A group's mean loss as a function of chosen parameters: value, gradient, Hessian-vector product.

The loss is the mean of the task's per-example loss (cross-entropy for a classifier; for a task
scoring several units per example, a causal LM, the mean over every scored token) over fixed
batches (one group's sampled examples), the model in eval mode (no dropout, BatchNorm on running statistics), so it is a
deterministic function of the parameters. Gradients and HVPs are double backward (autograd)
accumulated over micro-batches of at most ``chunk_size`` examples, so memory is bounded by the
chunk, not by the number of examples (the sum of the chunks' contributions is the same
gradient / product up to float rounding); this works through
optimum-quanto's fake-quantized (straight-through) modules as well.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch

from ..errors import FairQuantError
from ..tasks import Task, task_of

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode for the block; the model's own mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def differentiable(model: torch.nn.Module, params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    """Eval mode, gradients on ``params``, the math attention kernel (the fused CPU kernels have
    no double backward); every flag is restored afterwards, so a caller's model is left as it was."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        with evaluating(model), torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class GroupObjective:
    """Mean per-example loss of ``model`` over ``batches`` w.r.t. ``params`` (flattened in order),
    the loss being ``task``'s (default: the task of the model's head).

    ``hvp(v)`` returns H·v for a flat ``v`` and counts itself in ``hvps``; ``on_hvp`` (if set) is
    called after each product (a progress bar's ``update``). ``chunk_size`` (None: the batches
    as given) splits every batch into micro-batches of at most that many examples.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        params: Sequence[torch.nn.Parameter],
        batches: Sequence[Batch],
        chunk_size: int | None = None,
        task: Task | str | None = None,
    ):
        if not batches:
            raise FairQuantError("a group objective needs at least one batch of examples")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0):
            raise FairQuantError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        self.model = model
        self.task = task_of(model, task)
        self.params = list(params)
        self.chunk_size = chunk_size
        self.batches = [piece for batch in batches for piece in _chunks(batch, chunk_size)]
        self.num_examples = sum(int(labels.shape[0]) for _, labels in self.batches)
        #: a task that scores several units per example (a causal LM's tokens) averages over units
        self.by_units = self.task.unit_name != "example"
        self.num_units = (sum(int(self.task.units(labels).sum()) for _, labels in self.batches)
                          if self.by_units else self.num_examples)
        self.dim = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.hvps = 0
        self.on_hvp: Callable[[int], Any] | None = None

    def _batch_loss(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if self.by_units:  # the mean over every scored unit of the batches (token-weighted)
            losses = self.task.loss(self.model(**inputs), labels)
            return (losses * self.task.units(labels).to(losses.dtype)).sum() / self.num_units
        return self.task.loss(self.model(**inputs), labels).sum() / self.num_examples

    def loss(self) -> float:
        with torch.no_grad(), evaluating(self.model):
            return float(sum(self._batch_loss(i, y) for i, y in self.batches))

    def gradient(self) -> torch.Tensor:
        """∇ of the mean loss, flat (detached)."""
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with differentiable(self.model, self.params):
            for inputs, labels in self.batches:
                grads = torch.autograd.grad(self._batch_loss(inputs, labels), self.params, allow_unused=True)
                self._accumulate(total, grads)
        return total

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """H·v by double backward, accumulated over the batches."""
        pieces = self.unflatten(v.to(self.device, self.dtype))
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with differentiable(self.model, self.params):
            for inputs, labels in self.batches:
                grads = torch.autograd.grad(self._batch_loss(inputs, labels), self.params, create_graph=True, allow_unused=True)
                dot = sum((g * p).sum() for g, p in zip(grads, pieces) if g is not None)
                if not torch.is_tensor(dot) or not dot.requires_grad:
                    continue  # the loss is linear in these parameters on this batch
                self._accumulate(total, torch.autograd.grad(dot, self.params, allow_unused=True))
        self.hvps += 1
        if self.on_hvp is not None:
            self.on_hvp(1)
        return total

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for p in self.params:
            out.append(flat[start : start + p.numel()].view_as(p))
            start += p.numel()
        return out

    def _accumulate(self, total: torch.Tensor, grads: Sequence[torch.Tensor | None]) -> None:
        """``total += flatten(grads)`` in place, piece by piece (no flat temporary of every
        weight's gradient: at ViT-B size that is 340 MB per chunk)."""
        for piece, g in zip(self.unflatten(total), grads):
            if g is not None:
                piece.add_(g.to(self.dtype))


def _chunks(batch: Batch, size: int | None) -> list[Batch]:
    """``batch`` split along its first dimension into pieces of at most ``size`` examples."""
    inputs, labels = batch
    n = int(labels.shape[0])
    if size is None or n <= size:
        return [batch]
    return [
        ({k: v[start : start + size] for k, v in inputs.items()}, labels[start : start + size])
        for start in range(0, n, size)
    ]
