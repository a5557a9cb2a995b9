"""A causal LM end to end: the CLI builds AutoModelForCausalLM for a causal-LM checkpoint (and
refuses a classification head for the task), a recipe pre-trains a Llama with a BPE tokenizer,
audits, explains and publishes a torchao folder that plain transformers loads — locally and from
the loopback Hub — reproducing the audited per-group NLL; the Hub recipe dry-runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hf_fairquant.cli import main
from hf_fairquant.run import dry_run, load_recipe, run
from tests import hub_fixtures
from tests.lm_fixtures import lm_rows, lm_tokenizer, tiny_llama_lm
from tests.plain_transformers import run_plain

hub = hub_fixtures.hub
REPO = Path(__file__).resolve().parents[1]


def _write_jsonl(folder: Path, n_train: int = 48, n_test: int = 36) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        rows = lm_rows(n, seed)
        (folder / f"{split}.jsonl").write_text(
            "\n".join(json.dumps({"text": t, "language": g}, ensure_ascii=False) for t, g in zip(rows["text"], rows["language"])),
            encoding="utf-8",
        )
    return folder


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama_lm")
    tiny_llama_lm().save_pretrained(folder)
    lm_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("llama_cls")
    config = LlamaConfig(vocab_size=len(lm_tokenizer()), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, num_labels=3)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    lm_tokenizer().save_pretrained(folder)
    return folder


def test_the_cli_audits_a_causal_lm_checkpoint_with_auto_model_for_causal_lm(llama_folder, tmp_path, capsys):
    data = _write_jsonl(tmp_path / "data")
    out = tmp_path / "out"
    code = main(["audit", "--model", str(llama_folder), "--dataset", str(data), "--text_column", "text",
                 "--group_column", "language", "--recipes", "w8a8@torchao", "--n_boot", "0", "--output-dir", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["task"] == "causal-lm" and results["model"]["auto_class"] == "AutoModelForCausalLM"
    assert results["model"]["pipeline_tag"] == "text-generation" and results["audit"]["task"] == "causal-lm"
    fp = results["audit"]["fp"]["metrics"]
    assert set(fp["group_perplexity"]) == {"en", "ja", "ru"} and fp["perplexity"] > 1
    assert "W8A8@TORCHAO" in {r["name"] for r in results["audit"]["quantized"]}
    screen = capsys.readouterr().out
    assert "Perplexity per group (lower is better)" in screen
    assert "| model | bits | perplexity |" in (out / "report.md").read_text()


def test_the_cli_refuses_a_classification_head_for_the_causal_lm_task(classifier_folder, tmp_path, capsys):
    data = _write_jsonl(tmp_path / "data", 8, 8)
    code = main(["audit", "--model", str(classifier_folder), "--task", "causal-lm", "--dataset", str(data),
                 "--text_column", "text", "--group_column", "language", "--output-dir", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "LlamaForSequenceClassification is a sequence-classification model: its head does not fit the task " \
           "'causal-lm'" in err and "AutoModelForCausalLM" in err
    assert not (tmp_path / "out").exists()


def test_the_cli_audits_the_manpages_source(llama_folder, tmp_path):
    from hf_fairquant.data.manpages import manpages_available

    reason = manpages_available(["de", "ja", "ru"])
    if reason:
        pytest.skip(reason)
    out = tmp_path / "out"
    options = json.dumps({"languages": "de,ja,ru", "max_pages": 3, "max_chars": 300})
    assert main(["audit", "--model", str(llama_folder), "--dataset", "manpages", "--source_options", options,
                 "--recipes", "w4@torchao", "--n_boot", "0", "--max_length", "64", "--output-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["group_columns"] == ["language"]
    assert set(results["audit"]["fp"]["metrics"]["group_perplexity"]) <= {"de", "ja", "ru"}


def _recipe(tmp_path: Path, data: Path) -> Path:
    recipe = {
        "data": {"source": str(data), "text_column": "text", "image_column": None, "label_column": None,
                 "group_columns": ["language"], "max_length": 48},
        "model": {"task": "causal-lm", "tokenizer": "bpe",
                  "config": {"model_type": "llama", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
                             "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                             "max_position_embeddings": 48}},
        "training": {"max_steps": 6, "per_device_train_batch_size": 8, "learning_rate": 0.01, "save_strategy": "no",
                     "use_cpu": True, "seed": 0, "disable_tqdm": True, "report_to": "none"},
        "audit": {"recipes": ["w8a8@torchao", "w2a8"], "calibration_size": 24, "n_boot": 20, "batch_size": 16},
        "explain": {"examples_per_group": 64, "hvp_budget": 5, "probes": 1, "chunk_size": 8, "calibration_size": 24},
        "mitigation": {"quantization": {"preset": "w4a8", "backend": "torchao",
                                        "overrides": {"lm_head": "w8a8", "model.embed_tokens": "w8"}},
                       "group_sampling": "group_balanced", "group_weighting": "dro", "max_steps": 3,
                       "per_device_train_batch_size": 8, "learning_rate": 0.001, "save_strategy": "no", "use_cpu": True,
                       "seed": 0, "disable_tqdm": True},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


_PLAIN_NLL = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

source, rows_file, max_length = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = AutoModelForCausalLM.from_pretrained(source).eval()
tok = AutoTokenizer.from_pretrained(source)
generator = pipeline("text-generation", model=source)
print("GENERATED", json.dumps(generator("ls", max_new_tokens=4, do_sample=False)[0]["generated_text"][:2]))
rows = [json.loads(line) for line in open(rows_file, encoding="utf-8")]
sums, counts = {}, {}
with torch.no_grad():
    for start in range(0, len(rows), 8):
        batch = rows[start:start + 8]
        enc = tok([r["text"] for r in batch], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        logits = model(**enc).logits.float()
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100, reduction="none")
        for r, row_nll, row_labels in zip(batch, nll, labels):
            g = r["language"]
            sums[g] = sums.get(g, 0.0) + float(row_nll.sum())
            counts[g] = counts.get(g, 0) + int((row_labels != -100).sum())
print("NLL", json.dumps({g: sums[g] / counts[g] for g in sums}))
print("ARCH", type(model).__name__, type(model.model.embed_tokens.weight).__name__)
"""


def _plain_group_nll(source: str, data: Path, cwd: Path) -> tuple[dict, str]:
    proc = run_plain(_PLAIN_NLL, cwd, args=(source, str(data / "test.jsonl"), "48"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in proc.stdout.splitlines() if " " in line}
    return json.loads(lines["NLL"]), lines["ARCH"]


@pytest.mark.slow
def test_a_recipe_pretrains_audits_explains_and_publishes_a_transformers_native_lm(tmp_path, hub):
    data = _write_jsonl(tmp_path / "data")
    out = tmp_path / "out"
    recipe = load_recipe(_recipe(tmp_path, data), output_dir=str(out))
    assert "trained for 6 steps" in dry_run(recipe)
    result = run(recipe, echo=lambda *a: None)
    # the BPE tokenizer was trained on the training split and is saved with both models
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(out / "fp_model").get_vocab() and len(tok) <= 300
    assert result.fp_model.config.vocab_size == 300 and result.explained_recipe in ("W8A8@TORCHAO", "W2A8")
    assert result.explanation.settings["unit"] == "token"
    published = result.published_row.metrics
    assert published["group_loss_increase"] and result.published.layer_bits["model.embed_tokens"] == "w8"
    # the model card indexes per-group perplexity
    card = (out / "README.md").read_text()
    assert "type: perplexity" in card and "## Perplexity per group" in card and "pipeline_tag: text-generation" in card
    # plain transformers (no hf_fairquant) loads the folder and reproduces the audited per-group NLL
    nll, arch = _plain_group_nll(str(out), data, tmp_path)
    assert arch == "LlamaForCausalLM IntxUnpackedToInt8Tensor"
    for g, value in nll.items():
        assert value == pytest.approx(published["group_mean_loss"][g], abs=1e-4), g
    # … and from the (loopback) Hub
    from hf_fairquant.hub import push_folder

    push_folder(out, "me/manpages-llama", token=hub_fixtures.TOKEN)
    from_hub, _ = _plain_group_nll("me/manpages-llama", data, tmp_path)
    assert from_hub == pytest.approx(nll, abs=1e-6)


def test_the_hub_recipe_dry_runs(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "hub_qwen_multilingual.yaml", output_dir=str(tmp_path / "out"))
    plan = dry_run(recipe)
    assert "Qwen/Qwen2.5-0.5B (causal-lm, AutoModelForCausalLM)" in plan
    assert "groups by language" in plan and "int4@torchao" in plan and "mitigate: FairQuantTrainer, w4a8-mixed@torchao" in plan
    assert recipe.data.label_column is None and recipe.data.text_column == "targets"


def test_the_manpages_recipe_dry_runs(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "manpages_llama.yaml", output_dir=str(tmp_path / "out"))
    plan = dry_run(recipe)
    assert "a new llama from config (causal-lm, AutoModelForCausalLM)" in plan
    assert "w4a8-mixed@torchao, sampling group_balanced" in plan and "weighting dro" in plan
