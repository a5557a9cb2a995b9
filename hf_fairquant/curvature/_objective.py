"""A group's mean loss as a function of chosen parameters: value, gradient, Hessian-vector product.

The loss is the mean of the task's per-example loss (cross-entropy for a classifier; for a task
scoring several units per example, a causal LM, the mean over every scored token) over fixed
batches (one group's sampled examples), the model in eval mode (no dropout, BatchNorm on running statistics), so it is a
deterministic function of the parameters. Gradients and HVPs are double backward (autograd)
accumulated over micro-batches of at most ``chunk_size`` examples, so memory is bounded by the
chunk, not by the number of examples (the sum of the chunks' contributions is the same
gradient / product up to float rounding); this works through
optimum-quanto's fake-quantized (straight-through) modules as well.

Near the floor (``benchmarks/hvp_cost.py``): curvature passes run a transformers model on the
``eager`` attention implementation (measured faster under double differentiation than SDPA's
math kernel, the only SDPA kernel with a double backward on a CPU; the model's own implementation
is restored afterwards), and inside :meth:`GroupObjective.retained` every micro-batch's gradient
graph is built once and kept while it fits in memory, so the gradient comes for free and each
further product is one backward through the kept graph (≈ 2 gradients) instead of a forward and
two backwards (≈ 3). Batching products with ``vmap`` (``is_grads_batched``) was measured slower
per product on a CPU and is not used.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, Sequence

import torch

from .._distributed import sum_in_order, world
from ..errors import FairQuantError
from ..tasks import Task, task_of

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]

#: The attention implementation of curvature passes (transformers models that can switch): eager
#: attention's double backward was measured faster than SDPA's math kernel (benchmarks/hvp_cost.py).
CURVATURE_ATTENTION = "eager"
#: Share of the memory available when a retained session starts that its kept graphs may take.
RETAIN_MEMORY_SHARE = 0.25


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
def curvature_attention(model: torch.nn.Module, implementation: str = CURVATURE_ATTENTION) -> Iterator[None]:
    """A transformers model on ``implementation`` attention for the block, its own afterwards; a
    model that cannot switch (no ``set_attn_implementation``, or one that refuses) is left as it is."""
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    switch = getattr(model, "set_attn_implementation", None)
    can = getattr(model, "_can_set_attn_implementation", None)
    changed = False
    if switch is not None and current is not None and current != implementation and (can is None or can()):
        try:
            switch(implementation)
            changed = getattr(config, "_attn_implementation", None) == implementation
        except (ValueError, ImportError, AttributeError, NotImplementedError):
            changed = False
    try:
        yield
    finally:
        if changed:
            switch(current)


@contextlib.contextmanager
def differentiable(model: torch.nn.Module, params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    """Eval mode, gradients on ``params``, :data:`CURVATURE_ATTENTION` attention where the model
    can switch and else the math SDPA kernel (the fused CPU kernels have no double backward); every
    flag is restored afterwards, so a caller's model is left as it was."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        with evaluating(model), torch.enable_grad(), curvature_attention(model), sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class GroupObjective:
    """Mean per-example loss of ``model`` over ``batches`` w.r.t. ``params`` (flattened in order),
    the loss being ``task``'s (default: the task of the model's head).

    ``hvp(v)`` returns H·v for a flat ``v`` and counts itself in ``hvps``; ``on_hvp`` (if set) is
    called after each product (a progress bar's ``update``). ``chunk_size`` (None: the batches
    as given) splits every batch into micro-batches of at most that many examples. ``parts``
    labels each given batch (e.g. 0 and 1 for two halves of the examples):
    :meth:`gradient_parts` returns the gradient's contribution of each label. ``shard``: under
    several processes (``torch.distributed``), each computes every world-size-th micro-batch and
    the contributions are summed in micro-batch order on all of them (the same sum, bit for bit,
    as one process; every process must make the same calls). ``retain_bytes`` caps the memory of
    the graphs :meth:`retained` keeps (default: :data:`RETAIN_MEMORY_SHARE` of what is available).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        params: Sequence[torch.nn.Parameter],
        batches: Sequence[Batch],
        chunk_size: int | None = None,
        task: Task | str | None = None,
        *,
        parts: Sequence[int] | None = None,
        shard: bool = False,
        retain_bytes: int | None = None,
    ):
        if not batches:
            raise FairQuantError("a group objective needs at least one batch of examples")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0):
            raise FairQuantError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        if parts is not None and len(parts) != len(batches):
            raise FairQuantError(f"parts labels {len(parts)} batches, but {len(batches)} were given")
        self.model = model
        self.task = task_of(model, task)
        self.params = list(params)
        self.chunk_size = chunk_size
        labels = list(parts) if parts is not None else [0] * len(batches)
        pieces = [(piece, label) for batch, label in zip(batches, labels) for piece in _chunks(batch, chunk_size)]
        self.batches = [piece for piece, _ in pieces]
        self.parts = [label for _, label in pieces]
        self.num_examples = sum(int(labels.shape[0]) for _, labels in self.batches)
        #: a task that scores several units per example (a causal LM's tokens) averages over units
        self.by_units = self.task.unit_name != "example"
        self.num_units = (sum(int(self.task.units(labels).sum()) for _, labels in self.batches)
                          if self.by_units else self.num_examples)
        self.dim = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.shard = shard
        self.retain_bytes = retain_bytes
        self.hvps = 0
        self.on_hvp: Callable[[int], Any] | None = None
        self._session = False
        self._graphs: dict[int, tuple] = {}
        self._keep = 0  # micro-batches whose graph a session keeps (-1: not measured yet)
        self._gradient_parts: dict[int, torch.Tensor] | None = None

    # ------------------------------------------------------------ a session that keeps graphs
    @contextlib.contextmanager
    def retained(self) -> Iterator["GroupObjective"]:
        """Within the block the products share each micro-batch's gradient graph: the first
        product (or :meth:`gradient`) builds it — a forward and one backward that keeps its graph,
        the gradient coming out of it — and every later product is one backward through it. The
        graphs of as many micro-batches as fit in ``retain_bytes`` are kept (measured on the first
        one); the others are rebuilt per product, as outside the block. The model is in its
        curvature state (see :func:`differentiable`) for the whole block."""
        if self._session:
            yield self
            return
        with differentiable(self.model, self.params):
            self._session, self._graphs, self._keep, self._gradient_parts = True, {}, -1, None
            try:
                yield self
            finally:
                self._session, self._graphs, self._keep, self._gradient_parts = False, {}, 0, None

    # ------------------------------------------------------------ values
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
        parts = self.gradient_parts()
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for label in sorted(parts):
            total += parts[label]
        return total

    def gradient_parts(self) -> dict[int, torch.Tensor]:
        """``{label: Σ of that label's micro-batch gradients}`` (see ``parts``); their sum is
        :meth:`gradient`. Inside :meth:`retained` it comes from the graphs the products use, at no
        extra pass, and is kept until :meth:`release_gradient`; outside, every call computes it."""
        if self._session:
            if self._gradient_parts is None:
                self._gradient_parts = self._sum_parts(lambda i: self._graph(i))
            return self._gradient_parts
        with differentiable(self.model, self.params):
            return self._sum_parts(self._plain_gradient)

    def release_gradient(self) -> None:
        """Drop the gradient a session keeps (its graphs stay)."""
        self._gradient_parts = None

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """H·v by double backward, accumulated over the micro-batches in order."""
        pieces = self.unflatten(v.to(self.device, self.dtype))
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        session = contextlib.nullcontext() if self._session else differentiable(self.model, self.params)
        with session:
            self._each(lambda i: self._product(i, pieces), lambda i: total)
        self.hvps += 1
        if self.on_hvp is not None:
            self.on_hvp(1)
        return total

    # ------------------------------------------------------------ per micro-batch
    def _each(self, compute: Callable[[int], Sequence[torch.Tensor | None]], target: Callable[[int], torch.Tensor]) -> None:
        """``target(i) += compute(i)`` over the micro-batches in order; sharded across processes
        (each computes its share, the results gathered and added in the same order) when asked."""
        if self.shard and world()[1] > 1:
            sum_in_order(len(self.batches), lambda i: self._flat(compute(i)), lambda i, g: target(i).add_(g),
                         target(0), enabled=True)
            return
        for i in range(len(self.batches)):
            self._accumulate(target(i), compute(i))

    def _plain_gradient(self, index: int) -> Sequence[torch.Tensor | None]:
        inputs, labels = self.batches[index]
        return torch.autograd.grad(self._batch_loss(inputs, labels), self.params, allow_unused=True)

    def _graph(self, index: int) -> tuple:
        """Micro-batch ``index``'s gradient with its graph (kept in a session while it fits)."""
        kept = self._graphs.get(index)
        if kept is not None:
            return kept
        inputs, labels = self.batches[index]
        if self._session and self._keep < 0:  # the first graph of the session: measure what one costs
            with _SavedBytes(self.params) as saved:
                grads = torch.autograd.grad(self._batch_loss(inputs, labels), self.params, create_graph=True, allow_unused=True)
            self._keep = _graphs_that_fit(saved.bytes, self.retain_bytes, self.device)
        else:
            grads = torch.autograd.grad(self._batch_loss(inputs, labels), self.params, create_graph=True, allow_unused=True)
        if self._session and len(self._graphs) < self._keep:
            self._graphs[index] = grads
        return grads

    def _product(self, index: int, pieces: Sequence[torch.Tensor]) -> Sequence[torch.Tensor | None]:
        grads = self._graph(index)
        used = [(g, piece) for g, piece in zip(grads, pieces) if g is not None and g.requires_grad]
        if not used:  # the loss is linear in these parameters on this micro-batch
            return [None] * len(self.params)
        return torch.autograd.grad([g for g, _ in used], self.params, grad_outputs=[p for _, p in used],
                                   retain_graph=index in self._graphs, allow_unused=True)

    def _sum_parts(self, compute: Callable[[int], Sequence[torch.Tensor | None]]) -> dict[int, torch.Tensor]:
        sums = {label: torch.zeros(self.dim, dtype=self.dtype, device=self.device) for label in sorted(set(self.parts))}
        self._each(compute, lambda i: sums[self.parts[i]])
        return sums

    # ------------------------------------------------------------ flat vectors
    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for p in self.params:
            out.append(flat[start : start + p.numel()].view_as(p))
            start += p.numel()
        return out

    def _flat(self, grads: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """One flat vector of ``grads`` (zeros where a parameter got none), detached."""
        flat = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for piece, g in zip(self.unflatten(flat), grads):
            if g is not None:
                piece.copy_(g.detach().to(self.dtype))
        return flat

    def _accumulate(self, total: torch.Tensor, grads: Sequence[torch.Tensor | None]) -> None:
        """``total += flatten(grads)`` in place, piece by piece (no flat temporary of every
        weight's gradient: at ViT-B size that is 340 MB per chunk)."""
        for piece, g in zip(self.unflatten(total), grads):
            if g is not None:
                piece.add_(g.detach().to(self.dtype))


class _SavedBytes:
    """Bytes of the distinct storages autograd saves inside the block, parameters' own excluded
    (what keeping that graph costs)."""

    def __init__(self, params: Sequence[torch.Tensor]):
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.seen: dict[int, int] = {}

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        try:
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key not in self.skip and key not in self.seen:
                self.seen[key] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # a tensor subclass without one storage
            pass
        return tensor

    @property
    def bytes(self) -> int:
        return sum(self.seen.values())

    def __enter__(self) -> "_SavedBytes":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)


def _graphs_that_fit(graph_bytes: int, budget: int | None, device: torch.device) -> int:
    """How many graphs of ``graph_bytes`` fit in ``budget`` (default: a share of available memory)."""
    if budget is None:
        budget = int(RETAIN_MEMORY_SHARE * _available_bytes(device))
    return int(budget // max(graph_bytes, 1))


def _available_bytes(device: torch.device) -> int:
    """Free memory of ``device``: CUDA's free bytes, else the system's MemAvailable (0 if unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


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
