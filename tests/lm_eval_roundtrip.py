"""The lm-eval round trip, offline: a tiny Llama published by hf_fairquant (torchao folders) and its
FP base, evaluated by ``lm_eval --log_samples`` on a local multiple-choice task of StereoSet items,
then compared with ``hf-fairquant compare-samples``.

Used by ``tests/test_compare_samples.py`` (the slow test runs it whole) and to regenerate the
committed fixture ``tests/fixtures/lm_eval/``::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH=. \\
        python -m tests.lm_eval_roundtrip /tmp/roundtrip --per-group 10 --fixture tests/fixtures/lm_eval

The model is trained for a few hundred steps on StereoSet's sentences so that its option scores
depend on the text; it has no meaningful stereotypes (see ``hf_fairquant.data.stereotypes``) —
this checks formats and the pipeline, not a model.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

TASK = "fq_stereoset"
RECIPES = {"w8": "w8@torchao", "w4": "w4@torchao", "w2a8": "w2a8@torchao"}
ITEM_FIELDS = ("id", "bias_type", "target", "type", "context", "choices", "label", "stereotype_label",
               "anti_stereotype_label", "unrelated_label")


def write_task(folder: Path, per_group: int) -> Path:
    """``items.jsonl`` (the first ``per_group`` StereoSet items with a context of every bias type)
    and the lm-eval task YAML reading it (``dataset_path: json``) in ``folder``."""
    from hf_fairquant.data import load_source

    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    rows = []
    for row in load_source("stereoset")["all"]:
        if row["context"] and counts.get(row["bias_type"], 0) < per_group:  # lm-eval adds " " even to an empty context
            counts[row["bias_type"]] = counts.get(row["bias_type"], 0) + 1
            rows.append({k: row[k] for k in ITEM_FIELDS})
    items = folder / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {items}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: label\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
        "metadata:\n  version: 1.0\n",
        encoding="utf-8",
    )
    return folder


def build_models(folder: Path, steps: int = 300, seed: int = 0, recipes: dict[str, str] | None = None) -> dict[str, Path]:
    """A tiny Llama and a BPE tokenizer trained on StereoSet's sentences (``fp/``), and its
    torchao versions (int8 and int4 weights; int2 weights with int8 dynamic activations) written by
    ``hf_fairquant.save_quantized``. Folders already there (a previous call) are reused."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_fairquant import quantize, save_quantized
    from hf_fairquant.data import load_source, train_bpe_tokenizer

    recipes = RECIPES if recipes is None else recipes
    folders = {"fp": folder / "fp", **{name: folder / name for name in recipes}}
    if all((f / "config.json").is_file() for f in folders.values()):
        return folders
    data = load_source("stereoset")["all"]
    texts = [f"{c} {x}" if c else x for c, xs in zip(data["context"], data["choices"]) for x in xs]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=2000, model_max_length=128)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    model.train()
    for step in range(steps):
        batch = [texts[order[(step * 32 + i) % len(texts)]] for i in range(32)]
        enc = tokenizer(batch, padding=True, truncation=True, max_length=64, return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(folders["fp"])
    tokenizer.save_pretrained(folders["fp"])
    for name, recipe in recipes.items():
        quantized = quantize(LlamaForCausalLM.from_pretrained(folders["fp"]).eval(), recipe)
        folders[name] = save_quantized(quantized, folder / name)
        tokenizer.save_pretrained(folders[name])
    return folders


def lm_eval_command(model: Path, task_dir: Path, out: Path) -> list[str]:
    """The ``lm_eval`` command line that evaluates ``model`` on the local task, offline."""
    lm_eval = shutil.which("lm_eval") or str(Path(sys.executable).parent / "lm_eval")
    return [lm_eval, "--model", "hf", "--model_args", f"pretrained={model},dtype=float32", "--tasks", TASK,
            "--include_path", str(task_dir), "--log_samples", "--output_path", str(out), "--device", "cpu",
            "--batch_size", "16"]


def run_lm_eval(model: Path, task_dir: Path, out: Path) -> Path:
    """Run lm_eval offline (one thread); returns the samples file it wrote."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(lm_eval_command(model, task_dir, out), env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"lm_eval failed ({done.returncode}):\n{done.stderr[-3000:]}")
    found = sorted(out.rglob(f"samples_{TASK}_*.jsonl"))
    if len(found) != 1:
        raise RuntimeError(f"expected one samples file under {out}, found {found}")
    return found[0]


def round_trip(work: Path, per_group: int = 10, steps: int = 300) -> dict[str, Path]:
    """Models, task, and one lm_eval run per model: {name: samples file}."""
    task_dir = write_task(work / "task", per_group)
    models = build_models(work / "models", steps=steps)
    return {name: run_lm_eval(folder, task_dir, work / "lm_eval" / name) for name, folder in models.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--per-group", type=int, default=10, help="StereoSet items per bias type")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--fixture", type=Path, default=None, help="copy the samples files here (and the commands)")
    args = parser.parse_args()
    samples = round_trip(args.work, args.per_group, args.steps)
    for name, path in samples.items():
        print(name, path)
    if args.fixture is not None:
        args.fixture.mkdir(parents=True, exist_ok=True)
        for name, path in samples.items():
            shutil.copy(path, args.fixture / f"{name}.jsonl")
        commands = [" ".join(shlex.quote(a) for a in lm_eval_command(
            Path("MODELS") / name, Path("TASK_DIR"), Path("OUT") / name)).replace(str(Path(sys.executable).parent) + "/", "")
            for name in samples]
        (args.fixture / "commands.txt").write_text(
            f"# made by: python -m tests.lm_eval_roundtrip WORK --per-group {args.per_group} --steps {args.steps} "
            f"--fixture {args.fixture}\n# (MODELS = WORK/models, TASK_DIR = WORK/task, OUT = WORK/lm_eval; "
            "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1)\n" + "\n".join(commands) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
