"""Hessian-vector products near their floor: one product's cost in gradients, by attention path and
method, and explain's default per-group curvature work, before and after (benchmarks the choices
of ``hf_fairquant.curvature``).

Side by side in one process, on one group sample, every ratio against G: one gradient of the
same loss w.r.t. the same parameters, the fastest of the model's own kernels (what
``loss.backward()`` costs), SDPA's math kernel and eager attention. Unit costs are
interleaved over ``--rounds`` rounds, the fastest of each kept:

- F: a forward without gradient; G on SDPA's math kernel (how explain took gradients before) and on
  eager attention;
- "fresh" products (a forward and two backwards each, as before this change) on SDPA's math
  kernel (what ``differentiable()`` forced before) and on eager attention;
- "kept graph" products: one backward through a gradient graph kept across products
  (``GroupObjective.retained``), on each attention path;
- four products batched with vmap (``is_grads_batched``) through a kept graph, per product.

Then explain's curvature work for one group and model at its defaults (``hvp_budget`` 12:
1 Taylor product, 7 Lanczos steps, 4 Hutchinson probes; the FP gradient with its split-half
noise floor; the straight-through quantized model's gradient), once as before (SDPA math, a
gradient per half, 12 fresh products) and once as now (eager attention, kept graphs, the gradient
taken from them), with peak memory (sampled RSS) above the level at its start.

Models from config, random weights: ViT-B/16 at 64² (16 images, labels 0–9) and a Llama
(hidden 1024, 4 layers, 16 heads, MLP 2816, vocabulary 32000; 8 sequences × 128 tokens) under a
plain causal-LM loss defined here (each unpadded sequence's mean next-token cross-entropy: the
causal-lm task's per-text loss without its masking). Parameters: every Linear weight except the head.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/hvp_cost.py [--models vit-b16 llama] [--rounds 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import PeakMemory  # noqa: E402

from hf_fairquant.curvature import GroupObjective, hutchinson_trace, top_eigenvalue  # noqa: E402
from hf_fairquant.quantization import QuantRecipe, get_quantizer  # noqa: E402
from hf_fairquant.tasks import Task  # noqa: E402
from hf_fairquant.tasks.base import float_logits  # noqa: E402

EXPLAIN = {"probes": 4, "lanczos": 7, "tol": 1e-3, "lanczos_vectors": 4, "chunk_size": 16}  # explain's defaults


class NextTokenLoss(Task):
    """A plain causal-LM loss: per sequence, the mean cross-entropy of each next token."""

    name = "next-token-benchmark"

    def check_model(self, model: torch.nn.Module) -> None:
        pass

    def loss(self, output, targets: torch.Tensor) -> torch.Tensor:
        logits, nxt = float_logits(output)[:, :-1], targets[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), nxt.reshape(-1), reduction="none")
        return ce.view(nxt.shape).mean(1)


def build(name: str, attention: str):
    """(model, batches of the group sample, task) — the same weights and data for every attention."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "vit-b16":
        from transformers import ViTConfig, ViTForImageClassification

        model = ViTForImageClassification(ViTConfig(image_size=64, num_labels=10, attn_implementation=attention)).eval()
        x, y = torch.randn(16, 3, 64, 64, generator=g), torch.randint(0, 10, (16,), generator=g)
        return model, ({"pixel_values": x}, y), None
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, num_attention_heads=16,
                         num_key_value_heads=16, vocab_size=32000, attn_implementation=attention)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 32000, (8, 128), generator=g)
    return model, ({"input_ids": ids}, ids), NextTokenLoss()


def linear_names(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith(("classifier", "lm_head"))]


def weights(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [model.get_submodule(n).weight for n in linear_names(model)]


def halves(batch):
    inputs, labels = batch
    n = len(labels) // 2
    cut = lambda a, b: ({k: v[a:b] for k, v in inputs.items()}, labels[a:b])  # noqa: E731
    return [cut(0, n), cut(n, len(labels))]


# ---------------------------------------------------------------- the way it was
def before_hvp(obj: GroupObjective, v: torch.Tensor) -> torch.Tensor:
    """The product as computed before: SDPA's math kernel, a forward and two backwards."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    pieces, total = obj.unflatten(v.to(obj.device)), torch.zeros(obj.dim, device=obj.device)
    with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
        for inputs, labels in obj.batches:
            grads = torch.autograd.grad(obj._batch_loss(inputs, labels), obj.params, create_graph=True)
            dot = sum((g * p).sum() for g, p in zip(grads, pieces))
            obj._accumulate(total, torch.autograd.grad(dot, obj.params))
    return total


def before_gradient(obj: GroupObjective, math: bool = True) -> torch.Tensor:
    """A gradient: as explain took it before (``math``: SDPA's math kernel forced), or plainly
    (the model's own kernels: what ``loss.backward()`` costs — the unit of every ratio here)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    total = torch.zeros(obj.dim, device=obj.device)
    kernels = sdpa_kernel([SDPBackend.MATH]) if math else contextlib.nullcontext()
    with torch.enable_grad(), kernels:
        for inputs, labels in obj.batches:
            obj._accumulate(total, torch.autograd.grad(obj._batch_loss(inputs, labels), obj.params))
    return total


def plain_gradient(obj: GroupObjective) -> torch.Tensor:
    return before_gradient(obj, math=False)


# ---------------------------------------------------------------- unit costs
def unit_costs(name: str, rounds: int) -> dict:
    """Every unit cost, measured in alternation within each round (so a change of load hits all
    alike); the fastest of ``rounds`` kept."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    models = {attention: build(name, attention) for attention in ("sdpa", "eager")}
    (m_sdpa, batch, task), (m_eager, _, _) = models["sdpa"], models["eager"]
    p_sdpa, p_eager = weights(m_sdpa), weights(m_eager)
    o_sdpa = GroupObjective(m_sdpa, p_sdpa, [batch], task=task)
    o_eager = GroupObjective(m_eager, p_eager, [batch], task=task)
    inputs = batch[0]
    dim = o_sdpa.dim
    v = torch.randn(dim, generator=torch.Generator().manual_seed(1))
    V = torch.randn(4, dim, generator=torch.Generator().manual_seed(2))
    pieces = [V[:, a:b].view(4, *p.shape) for a, b, p in _slices(p_eager)]
    best: dict[str, float] = {}

    def clock(key: str, fn) -> None:
        started = time.perf_counter()
        fn()
        best[key] = min(best.get(key, float("inf")), time.perf_counter() - started)

    def forward(model):
        with torch.no_grad():
            model(**inputs)

    forward(m_sdpa), forward(m_eager)  # warm-up
    with o_eager.retained():  # the eager objective's kept graph (as explain keeps it)
        o_eager.gradient_parts()
        eager_graph = o_eager._graphs[0]
        with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):  # a kept graph on the math kernel
            math_graph = torch.autograd.grad(o_sdpa._batch_loss(*o_sdpa.batches[0]), p_sdpa, create_graph=True)
        with torch.enable_grad():
            for _ in range(rounds):
                clock("F sdpa", lambda: forward(m_sdpa))
                clock("F eager", lambda: forward(m_eager))
                clock("G", lambda: plain_gradient(o_sdpa))
                clock("G sdpa-math", lambda: before_gradient(o_sdpa))
                clock("G eager", lambda: plain_gradient(o_eager))
                clock("fresh sdpa-math", lambda: before_hvp(o_sdpa, v))
                clock("fresh eager", lambda: _fresh(o_eager, v))
                clock("kept sdpa-math", lambda: torch.autograd.grad(math_graph, p_sdpa, o_sdpa.unflatten(v), retain_graph=True))
                clock("kept eager", lambda: o_eager.hvp(v))
                clock("vmap4 eager", lambda: torch.autograd.grad(eager_graph, p_eager, pieces, retain_graph=True,
                                                                 is_grads_batched=True))
            math_graph = None
    g = min(best["G"], best["G sdpa-math"], best["G eager"])  # the unit: the fastest gradient measured
    row = {"model": name, "dim_m": round(dim / 1e6, 1), "G_s": round(g, 3)}
    row |= {key: round(t / g, 2) for key, t in best.items()}
    row["vmap4 eager"] = round(best["vmap4 eager"] / 4 / g, 2)  # per product
    return row


def _fresh(obj: GroupObjective, v: torch.Tensor) -> torch.Tensor:
    """A product outside any session: a forward and two backwards, on the objective's (eager) path."""
    fresh = GroupObjective(obj.model, obj.params, obj.batches, task=obj.task)
    return fresh.hvp(v)


def _slices(params):
    start = 0
    for p in params:
        yield start, start + p.numel(), p
        start += p.numel()


# ---------------------------------------------------------------- explain's per-group work
def explain_sequence(model, batch, task, names: list[str], before: bool) -> int:
    """Explain's curvature work for one group and model at its defaults, as it was (``before``:
    SDPA math, a gradient per half, fresh products) or as it is; returns the products made."""
    params = [model.get_submodule(n).weight for n in names]
    recipe = QuantRecipe.parse("w4")
    plan = {n: q for n, q in recipe.plan(model).items() if q is not None}
    twin = get_quantizer(recipe.backend).configure(recipe).straight_through(copy.deepcopy(model), plan)
    twin_params = [twin.get_submodule(n).weight for n in names]
    parts = halves(batch)
    delta = (torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(3)) * 1e-3).to(params[0].device)
    eig = dict(method="lanczos", tol=EXPLAIN["tol"], max_iterations=EXPLAIN["lanczos"], lanczos_vectors=EXPLAIN["lanczos_vectors"])
    chunk = EXPLAIN["chunk_size"]
    if before:
        for half in parts:
            before_gradient(GroupObjective(model, params, [half], chunk, task=task))  # the noise floor's halves
        GroupObjective(twin, twin_params, [batch], chunk, task=task).gradient()
        fp = GroupObjective(model, params, [batch], chunk, task=task)
        count = [0]

        def hvp(v):
            count[0] += 1
            return before_hvp(fp, v)
        hvp(delta)
        top_eigenvalue(hvp, fp.dim, **eig)
        hutchinson_trace(hvp, fp.dim, probes=EXPLAIN["probes"])
        return count[0]
    fp = GroupObjective(model, params, parts, chunk, task=task, parts=[0, 1])
    q = GroupObjective(twin, twin_params, parts, chunk, task=task, parts=[0, 1])
    with fp.retained():
        fp.gradient_parts()
        fp.release_gradient()
        q.gradient()
        fp.hvp(delta)
        top_eigenvalue(fp.hvp, fp.dim, **eig)
        hutchinson_trace(fp.hvp, fp.dim, probes=EXPLAIN["probes"])
    return fp.hvps


def explain_work(name: str) -> dict:
    model, batch, task = build(name, "sdpa")
    names = linear_names(model)
    whole = GroupObjective(model, weights(model), [batch], task=task)
    g_s = min(min(_timed(lambda: plain_gradient(whole))[0], _timed(whole.gradient)[0]) for _ in range(2))  # own / eager path
    out = {"model": name, "G_s": round(g_s, 3)}
    for label in ("before", "now"):
        with PeakMemory("cpu") as memory:
            seconds, hvps = _timed(lambda: explain_sequence(model, batch, task, names, before=label == "before"))
        out[label] = {"seconds": round(seconds, 1), "gradients": round(seconds / g_s, 1), "hvps": hvps,
                      "peak_mib": round(memory.peak_mib)}
    return out


def _timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def render(result: dict) -> str:
    lines = ["| model | params (M) | G (s) | F | G: own kernels, SDPA math, eager | product: fresh, SDPA math (before) | "
             "fresh, eager | kept graph, SDPA math | kept graph, eager (now) | vmap ×4 through a kept graph, per product |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["units"]:
        lines.append(f"| {r['model']} | {r['dim_m']} | {r['G_s']} | {r['F sdpa']} | {r['G']} / {r['G sdpa-math']} / "
                     f"{r['G eager']} | {r['fresh sdpa-math']} | {r['fresh eager']} | {r['kept sdpa-math']} | "
                     f"**{r['kept eager']}** | {r['vmap4 eager']} |")
    if result["explain"]:
        lines += ["", "| model | explain per group and model, before | now | products (before / now) | peak MiB (before / now) |",
                  "| --- | --- | --- | --- | --- |"]
        for w in result["explain"]:
            b, n = w["before"], w["now"]
            lines.append(f"| {w['model']} | {b['gradients']} G ({b['seconds']} s) | **{n['gradients']} G** ({n['seconds']} s) | "
                         f"{b['hvps']} / {n['hvps']} | {b['peak_mib']} / {n['peak_mib']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vit-b16", "llama"], choices=["vit-b16", "llama"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-explain", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {load_start}", flush=True)
    units, work = [], []
    for name in args.models:
        units.append(unit_costs(name, args.rounds))
        print(json.dumps(units[-1]), f"load {os.getloadavg()[0]:.1f}", flush=True)
        if not args.skip_explain:
            work.append(explain_work(name))
            print(json.dumps(work[-1]), f"load {os.getloadavg()[0]:.1f}", flush=True)
    result = {"units": units, "explain": work, "threads": torch.get_num_threads(),
              "load_average": {"start": load_start[0], "end": os.getloadavg()[0]}}
    print("\n" + render(result))
    print(f"\nload average at the end {os.getloadavg()}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
