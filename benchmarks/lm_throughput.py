"""The causal-LM audit pass against a plain transformers evaluation loop, side by side.

What it answers (issue: the causal-lm task): does scoring a language model per group through
hf_fairquant cost more than the loop a user would write? Both passes run in this process over the
same model, the same texts and the same batches, interleaved over ``--rounds`` rounds (the fastest
of each kept):

- **plain**: ``model(input_ids=…, attention_mask=…)`` per batch, then each text's mean next-token
  NLL over its non-padding tokens and the top-1 predictions (what an lm-eval-style loop computes);
- **hf_fairquant**: ``GroupedInputs.outputs`` with the ``causal-lm`` task — the audit's own pass
  (per-text token-weighted NLL, token counts and top-1 predictions for the agreement).

Ratio = plain seconds / hf_fairquant seconds (≥ 0.9 is the goal: ≥ 1 means the package is not
slower). The two passes' NLLs are compared (they must agree to float tolerance), so the ratio is
between two computations of the same numbers.

Then peak memory of ``audit(model, texts, [recipe])`` (sampled RSS above the level at its start)
against the FP model's own bytes: the audit keeps the FP model and one quantized copy at a time,
so the goal is ≤ 1 × the model (the quantized copy; the FP model already exists) plus activations.

Model: Qwen2ForCausalLM from Qwen2.5-0.5B's config (``--layers`` of its 24 decoder layers; random
weights: cost does not depend on what was learned). Texts: the test split of
recipes/manpages_llama.yaml (Debian's translated man pages, seven languages), tokenised by that
recipe's byte-level BPE (ids < 2,048, inside Qwen's vocabulary) and cut to ``--seq-len`` tokens.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/lm_throughput.py [--layers 24] [--texts 64] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import QWEN25_05B, PeakMemory  # noqa: E402

from hf_fairquant import audit  # noqa: E402
from hf_fairquant.inputs import GroupedInputs  # noqa: E402
from hf_fairquant.quantization import model_size_bytes  # noqa: E402

RECIPE = "recipes/manpages_llama.yaml"


def load_texts(count: int, seq_len: int):
    """``count`` test texts of the manpages recipe (every language, round robin), cut to ``seq_len``."""
    import tempfile

    from hf_fairquant.run import load_recipe, load_recipe_data
    from hf_fairquant.run.models import resolve_task

    with tempfile.TemporaryDirectory() as tmp:
        run = load_recipe(RECIPE, output_dir=tmp)
    data, spec, tokenizer, _ = load_recipe_data(run.model, run.data, resolve_task(run.model, run.data))
    test = data[run.data.eval_split]
    by_language: dict[str, list[int]] = {}
    for i, language in enumerate(test["language"][:]):
        by_language.setdefault(language, []).append(i)
    order = [rows[k] for k in range(max(map(len, by_language.values()))) for rows in by_language.values() if k < len(rows)]
    chosen = test.select(order[:count])
    chosen = chosen.map(lambda r: {"input_ids": r["input_ids"][:seq_len], "attention_mask": r["attention_mask"][:seq_len]})
    return chosen.select_columns(["input_ids", "attention_mask", "language"]), tokenizer


def padded_batches(texts, batch: int, pad: int) -> list[dict[str, torch.Tensor]]:
    """The plain loop's batches: right-padded ``input_ids`` and ``attention_mask``."""
    out = []
    for start in range(0, len(texts), batch):
        rows = texts[start : start + batch]
        width = max(len(ids) for ids in rows["input_ids"])
        ids = torch.full((len(rows["input_ids"]), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows["input_ids"]):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


@torch.no_grad()
def plain_pass(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """Each text's mean next-token NLL over its real tokens, and the top-1 predictions (kept)."""
    losses = []
    for batch in batches:
        logits = model(**batch).logits.float()[:, :-1]
        targets = batch["input_ids"][:, 1:]
        keep = batch["attention_mask"][:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        ).view(targets.shape)
        _ = logits.argmax(-1)  # the agreement's predictions, as the audit keeps them
        losses.append(((nll * keep).sum(1) / keep.sum(1)).numpy())
    return np.concatenate(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24, help="decoder layers of Qwen2.5-0.5B's shape (24: the whole)")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--audit-recipe", default="w8a8@torchao", help="the recipe of the peak-memory audit")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**{**QWEN25_05B, "num_hidden_layers": args.layers})).eval()
    parameters = sum(p.numel() for p in model.parameters())
    texts, tokenizer = load_texts(args.texts, args.seq_len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    inputs = GroupedInputs.of(model, texts, "language", task="causal-lm", processing_class=tokenizer)
    batches = padded_batches(texts, args.batch, pad)
    tokens = int(sum(int(b["attention_mask"][:, 1:].sum()) for b in batches))  # scored next tokens
    print(f"Qwen2 shape, {args.layers} layers: {parameters / 1e6:.0f} M parameters; {len(texts)} texts, {tokens} scored "
          f"tokens, batch {args.batch}, {torch.get_num_threads()} threads")

    plain_pass(model, batches[:1])  # warm-up of both (allocator, first-call overheads), untimed
    inputs.select(list(range(min(args.batch, len(texts))))).outputs(model, args.batch)
    best = {"plain": float("inf"), "hf_fairquant": float("inf")}
    mine = theirs = None
    for r in range(args.rounds):
        started = time.perf_counter()
        theirs = plain_pass(model, batches)
        best["plain"] = min(best["plain"], time.perf_counter() - started)
        started = time.perf_counter()
        mine = inputs.outputs(model, args.batch)
        best["hf_fairquant"] = min(best["hf_fairquant"], time.perf_counter() - started)
        print(f"round {r}: plain {best['plain']:.2f} s, hf_fairquant {best['hf_fairquant']:.2f} s (best so far)")
    difference = float(np.max(np.abs(mine.losses - theirs)))
    ratio = best["plain"] / best["hf_fairquant"]
    print(f"scored tokens/s: plain {tokens / best['plain']:.0f}, hf_fairquant {tokens / best['hf_fairquant']:.0f}; "
          f"ratio {ratio:.2f} (goal ≥ 0.9: {'met' if ratio >= 0.9 else 'not met'}); max |ΔNLL| between them {difference:.1e}")

    model_bytes = model_size_bytes(model)
    logits_bytes = args.batch * args.seq_len * model.config.vocab_size * 4  # one batch's float32 logits
    with PeakMemory("cpu") as memory:
        started = time.perf_counter()
        report = audit(model, texts, [args.audit_recipe], "language", calibration_dataset=texts, task="causal-lm",
                       processing_class=tokenizer,
                       calibration_size=16, batch_size=args.batch, n_boot=200, progress=False)
        audit_s = time.perf_counter() - started
    peak = memory.peak_mib * 2**20
    print(f"audit(FP + {args.audit_recipe}) {audit_s:.1f} s; peak memory above its start {peak / 2**20:.0f} MiB = "
          f"{peak / model_bytes:.2f} × the FP model ({model_bytes / 2**20:.0f} MiB; one batch's float32 logits: "
          f"{logits_bytes / 2**20:.0f} MiB) — goal: the FP model + one quantized copy")
    row = report.quantized[-1]
    result = {
        "command": "python " + " ".join(sys.argv), "layers": args.layers, "parameters": parameters, "texts": len(texts),
        "scored_tokens": tokens, "batch": args.batch, "threads": torch.get_num_threads(), "rounds": args.rounds,
        "plain_s": best["plain"], "hf_fairquant_s": best["hf_fairquant"], "ratio": ratio,
        "tokens_per_s": {"plain": tokens / best["plain"], "hf_fairquant": tokens / best["hf_fairquant"]},
        "max_nll_difference": difference, "audit_recipe": args.audit_recipe, "audit_s": audit_s,
        "audit_peak_bytes": peak, "model_bytes": model_bytes, "audit_peak_over_model": peak / model_bytes,
        "audited_row": row.name, "logits_bytes_per_batch": logits_bytes,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
