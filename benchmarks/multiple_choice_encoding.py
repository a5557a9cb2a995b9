"""How to encode a multiple-choice item's shared context once: three ways, timed on StereoSet.

1. **rows**: one row per option, ``context + option`` (what lm-eval's HF model does, apart from its
   one-token-continuation cache): the context is encoded once per option;
2. **packed** (the multiple-choice task): one row per item, the context then every option, options
   restarting at the context's position with a 4-D attention mask — the context once, one forward;
3. **kv-cache**: the contexts in one forward, the cache repeated per option, then the options in a
   second forward — the context once, two forwards and a cache copy.

All three give the same option scores (checked: the largest difference is printed). Prints tokens
fed to the model (and with padding) and seconds per 100 items:

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/multiple_choice_encoding.py [--items 256] [--hidden 512]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_fairquant.data import load_source, train_bpe_tokenizer
from hf_fairquant.tasks import get_task
from hf_fairquant.tasks.multiple_choice import CHOICE_TOKENS, SharedPrefixCollator


def items(dataset) -> list[tuple[list[int], list[list[int]]]]:
    """(context tokens, option tokens) of every encoded row."""
    out = []
    for ids, counts in zip(dataset["input_ids"], dataset[CHOICE_TOKENS]):
        c = len(ids) - sum(counts)
        options, at = [], c
        for n in counts:
            options.append(ids[at:at + n])
            at += n
        out.append((ids[:c], options))
    return out


def score_rows(model, batch) -> tuple[list[list[float]], int, int]:
    rows = [(ctx, opt) for ctx, opts in batch for opt in opts]
    length = max(len(c) + len(o) for c, o in rows)
    ids = torch.zeros((len(rows), length), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, (c, o) in enumerate(rows):
        ids[r, :len(c) + len(o)] = torch.tensor(c + o)
        mask[r, :len(c) + len(o)] = 1
    logp = model(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)
    scores, r = [], 0
    for ctx, opts in batch:
        s = []
        for o in opts:
            at = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(o))
            s.append(float(logp[r, at, torch.tensor(o)].sum()))
            r += 1
        scores.append(s)
    return scores, int(mask.sum()), ids.numel()


def score_packed(model, batch, collator) -> tuple[list[list[float]], int, int]:
    features = []
    for ctx, opts in batch:
        features.append({"input_ids": ctx + [t for o in opts for t in o],
                         "position_ids": list(range(len(ctx))) + [p for o in opts for p in range(len(ctx), len(ctx) + len(o))]})
    inputs = collator(features)
    logp = model(**inputs).logits.log_softmax(-1)
    scores = []
    for b, (ctx, opts) in enumerate(batch):
        s, start = [], len(ctx)
        for o in opts:
            before = torch.arange(start - 1, start - 1 + len(o))
            before[0] = len(ctx) - 1
            s.append(float(logp[b, before, torch.tensor(o)].sum()))
            start += len(o)
        scores.append(s)
    return scores, sum(len(f["input_ids"]) for f in features), inputs["input_ids"].numel()


def score_cache(model, batch) -> tuple[list[list[float]], int, int]:
    lengths = [len(c) for c, _ in batch]
    width = max(lengths)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, (c, _) in enumerate(batch):
        ids[b, :len(c)], mask[b, :len(c)] = torch.tensor(c), 1
    first = model(input_ids=ids, attention_mask=mask, use_cache=True)
    last = first.logits[torch.arange(len(batch)), torch.tensor(lengths) - 1].log_softmax(-1)
    k = max(len(o) for _, o in batch)  # every row repeated k times (StereoSet: always 3 options)
    cache = first.past_key_values
    cache.batch_repeat_interleave(k)
    rows = [(b, o) for b, (_, opts) in enumerate(batch) for o in opts + [opts[0]] * (k - len(opts))]
    olen = max(len(o) for _, o in rows)
    oids = torch.zeros((len(rows), olen), dtype=torch.long)
    omask = torch.zeros_like(oids)
    pos = torch.zeros_like(oids)
    for r, (b, o) in enumerate(rows):
        oids[r, :len(o)], omask[r, :len(o)] = torch.tensor(o), 1
        pos[r] = torch.arange(lengths[b], lengths[b] + olen)
    full_mask = torch.cat([mask.repeat_interleave(k, 0), omask], 1)
    second = model(input_ids=oids, attention_mask=full_mask, position_ids=pos, past_key_values=cache).logits.log_softmax(-1)
    scores = []
    for b, (_, opts) in enumerate(batch):
        s = []
        for i, o in enumerate(opts):
            r = b * k + i
            total = float(last[b, o[0]]) + (float(second[r, torch.arange(len(o) - 1), torch.tensor(o[1:])].sum()) if len(o) > 1 else 0.0)
            s.append(total)
        scores.append(s)
    fed = int(mask.sum()) + int(omask.sum())
    return scores, fed, ids.numel() + oids.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16, help="items per forward")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_source("stereoset")["all"]
    data = data.select(np.random.default_rng(0).permutation(len(data))[: args.items].tolist())
    texts = [f"{c} {x}" for c, xs in zip(data["context"], data["choices"]) for x in xs]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=8000, model_max_length=256)
    encoded = get_task("multiple-choice").prepare_dataset(data, tokenizer)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256,
    )).eval()
    collator = SharedPrefixCollator(torch.float32)
    batches = [b for b in (items(encoded)[i:i + args.batch] for i in range(0, len(encoded), args.batch))]
    methods = {"rows": lambda b: score_rows(model, b), "packed": lambda b: score_packed(model, b, collator),
               "kv-cache": lambda b: score_cache(model, b)}
    results = {}
    with torch.inference_mode():
        for name, run in methods.items():
            best = float("inf")
            for _ in range(args.repeats):
                started = time.perf_counter()
                out = [run(b) for b in batches]
                best = min(best, time.perf_counter() - started)
            scores = [s for o in out for s in o[0]]
            results[name] = (scores, sum(o[1] for o in out), sum(o[2] for o in out), best)
    reference = results["rows"][0]
    print(f"{args.items} StereoSet items, {args.batch} per forward, Llama hidden {args.hidden} × {args.layers} layers, "
          f"vocab {len(tokenizer)}, {torch.get_num_threads()} thread(s), best of {args.repeats}")
    print("| encoding | forwards per batch | tokens fed | with padding | s per 100 items | max |Δ score| vs rows |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (scores, fed, padded, seconds) in results.items():
        diff = max(abs(a - b) for x, y in zip(scores, reference) for a, b in zip(x, y))
        forwards = 2 if name == "kv-cache" else 1
        print(f"| {name} | {forwards} | {fed:,} | {padded:,} | {100 * seconds / args.items:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
