import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard

from hf_fairquant import load_quantized
from hf_fairquant.audit import predict
from hf_fairquant.cli import main
from hf_fairquant.run import dry_run, load_recipe, run
from tests import hub_fixtures

hub = hub_fixtures.hub

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses_and_dry_runs(recipe, tmp_path):
    parsed = load_recipe(recipe, output_dir=str(tmp_path / "out"))
    plan = dry_run(parsed)  # loads no data and no model: works offline for the Hub recipes too
    assert parsed.audit.recipes and parsed.data.source in plan
    if parsed.mitigation is None:  # an audit-only recipe (e.g. a pretrained LLM on StereoSet)
        assert "mitigate:" not in plan and "audit: FP + " in plan
        return
    assert "mitigate: FairQuantTrainer" in plan
    assert parsed.mitigation.quantization_recipe is not None or parsed.mitigation.quantization_budget is not None


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("data: {source: digits, colour: red}\nmodel: {name_or_path: x}\n", r"\['colour'\] in recipe section 'data'"),
        ("model: {name_or_path: x}\ntraining: {num_epochs: 3}\n", r"\['num_epochs'\] in recipe section 'training'"),
        ("model: {name_or_path: x}\nmitigation: {quantization: w4, sampler: x}\n", r"\['sampler'\] in recipe section 'mitigation'"),
        ("model: {name_or_path: x}\nexplain: {eigen: power}\n", r"\['eigen'\] in recipe section 'explain'"),
        ("modle: {name_or_path: x}\n", r"unknown top-level key\(s\) \['modle'\]"),
        ("data: [unclosed\n", r"is not valid YAML"),
        ("- just\n- a list\n", r"must be a YAML mapping"),
        ("model: {name_or_path: x}\nmitigation: {quantization: int3}\n", r"unknown quantization preset 'int3'"),
        ("model: {name_or_path: x}\nexport: {recipe: w8}\n", r"\['recipe'\] in recipe section 'export'"),
        ("model: {name_or_path: x}\nexport: {block_size: 100}\n", r"block_size must be a power of 2"),
    ],
)
def test_recipe_errors_name_the_key_and_section(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_recipe(_write(tmp_path, text))


def test_mitigation_needs_quantization_and_explain_an_audited_recipe(tmp_path):
    recipe = load_recipe(_write(tmp_path, "model: {name_or_path: x}\nmitigation: {group_sampling: group_balanced}\n"))
    with pytest.raises(ValueError, match="'mitigation' needs `quantization`"):
        dry_run(recipe)
    recipe = load_recipe(_write(tmp_path, "model: {name_or_path: x}\naudit: {recipes: [w4]}\nexplain: {recipe: w2a8}\n"))
    with pytest.raises(ValueError, match=r"explain.recipe 'w2a8' is not among audit.recipes"):
        run(recipe)


def test_export_recipes_are_audited_and_have_an_ort_kernel(tmp_path):
    recipe = load_recipe(_write(tmp_path, "model: {name_or_path: x}\naudit: {recipes: [w8a8]}\nexport: {recipes: [w8]}\n"))
    with pytest.raises(ValueError, match=r"export.recipes \['w8'\] are not among audit.recipes"):
        dry_run(recipe)
    recipe = load_recipe(_write(tmp_path, "model: {name_or_path: x}\naudit: {recipes: [w2a8]}\nexport: {recipes: [w2a8]}\n"))
    with pytest.raises(ValueError, match="no CPU kernel for 2-bit weights"):
        dry_run(recipe)
    recipe = load_recipe(_write(tmp_path, "model: {name_or_path: x}\naudit: {recipes: [w8a8]}\nexport: {recipes: [w8a8]}\n"))
    assert "export: ONNX Runtime w8a8" in dry_run(recipe)
    assert load_recipe(_write(tmp_path, "model: {name_or_path: x}\nexport: {enabled: false}\n")).export is None


def test_bad_output_folder_and_model_path_fail_before_any_work(tmp_path, monkeypatch, capsys):
    import hf_fairquant.run.models as pipeline

    monkeypatch.setattr(pipeline, "load_raw_grouped_dataset", lambda *a, **k: pytest.fail("loaded data before checking"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    recipe = ROOT / "recipes" / "digits_vit.yaml"
    assert main(["run", str(recipe), "--output-dir", str(out)]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    missing = _write(tmp_path, "data: {source: digits}\nmodel: {name_or_path: ./no/such/model}\n")
    assert main(["run", str(missing), "--output-dir", str(tmp_path / "new")]) == 2
    assert "model path ./no/such/model does not exist" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------- a real run
#: The digits recipe's mitigated model: publish_backend auto keeps the patch-embedding Conv2d float
#: and publishes torchao (a folder plain transformers loads), so its recipe names the backend.
MITIGATED = "FAIR-QAT W2A8-MIXED@TORCHAO"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """The digits recipe end to end: train → audit → explain → fair QAT → outputs."""
    out = tmp_path_factory.mktemp("run") / "digits"
    screen = []
    result = run(load_recipe(ROOT / "recipes" / "digits_vit.yaml", output_dir=str(out)), echo=screen.append,
                 command="hf-fairquant run recipes/digits_vit.yaml")
    return out, result, "\n".join(screen)


def test_run_writes_the_whole_folder(digits_run):
    out, result, screen = digits_run
    for name in ["README.md", "report.md", "results.json", "config.json", "model.safetensors",
                 "preprocessor_config.json", "fp_model/config.json", "plots/group_accuracy.png", "plots/groups.png",
                 "plots/gradients_curvature.png", "plots/activation_drift.png"]:
        assert (out / name).is_file(), name
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers
    assert not (out / "checkpoints").exists()  # save_strategy "no": no empty folder either
    results = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in results["audit"]["quantized"]]
    assert names == ["W8A8", "W4A8", "W4", "W2A8", "W8A8 ONNX", MITIGATED]
    assert results["audit"]["fp"]["metrics"]["accuracy"] > 0.7  # the tiny ViT really learned digits
    fp_worst = results["audit"]["fp"]["metrics"]["worst_group_accuracy"]
    assert results["explained_recipe"] == max(  # the largest fall of the worst group's accuracy
        results["audit"]["quantized"][:4],
        key=lambda r: (fp_worst - r["metrics"]["worst_group_accuracy"], -r["effective_bits"]))["name"]
    assert (out / "onnx" / "model.onnx").is_file() and (out / "onnx" / "model_quantized.onnx").is_file()
    assert results["published"]["effective_bits"] < 2.5
    for line in ["FP", "W2A8", MITIGATED, "published model", "outputs in", "load_quantized(",
                 "deployed (ONNX Runtime): onnx/model_quantized.onnx (W8A8)",
                 f"not exported: {MITIGATED} — ONNX Runtime has no CPU kernel for 2-bit weights"]:
        assert line in screen


_CARD_SNIPPET = """
import json, sys
import numpy as np
snippet, images = sys.argv[1], np.load(sys.argv[2])
exec(snippet)  # the card's "use it" code, as written: builds `model` and `pipe` with plain transformers
with torch.no_grad():
    logits = model(pixel_values=torch.tensor(np.load(sys.argv[3]))).logits
labels = [r[0]["label"] for r in pipe([im[..., None] for im in images], top_k=1)]
print(json.dumps({"argmax": logits.argmax(-1).tolist(), "pipeline": labels,
                  "imported": sorted(m for m in ("hf_fairquant", "optimum.quanto") if sys.modules.get(m) is not None)}))
"""


def test_the_digits_vit_publishes_a_folder_plain_transformers_loads(digits_run, tmp_path):
    """Issue #22 item 5: the only obstacle to a transformers-native artifact was the patch-embedding
    Conv2d; publish_backend auto keeps it float, publishes torchao, and the card says so with the true
    effective bits. The card's snippet runs in a fresh interpreter without hf_fairquant, and
    pipeline("image-classification") predicts what the audited model predicts."""
    import re

    import torch

    from hf_fairquant.data import load_grouped_dataset, load_source
    from hf_fairquant.quantization import effective_bits, layer_bits
    from tests.plain_transformers import run_plain

    out, _, _ = digits_run
    results = json.loads((out / "results.json").read_text())
    published = results["published"]
    patch = "vit.embeddings.patch_embeddings.projection"
    assert published["backend"] == "torchao" and list(published["kept_float"]) == [patch]
    assert published["layer_bits"][patch] == "float"
    audited = load_quantized(out)
    assert layer_bits(audited)[patch] is None and published["effective_bits"] == pytest.approx(effective_bits(audited))
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-classification"
    assert f"Kept in float32 so that plain transformers loads this folder: `{patch}` (Conv2d: torchao quantizes nn.Linear only)" \
           in card.text and f"({published['effective_bits']:.2f}) count them at 32 bits" in card.text
    snippet = re.search(r"```python\n(from transformers import .*?)```", card.text, re.S).group(1)

    recipe = load_recipe(ROOT / "recipes" / "digits_vit.yaml", output_dir=str(out))
    splits, _ = load_grouped_dataset(recipe.data)
    pixels = np.asarray(splits["test"].with_format("numpy")["pixel_values"][:60], dtype=np.float32)
    images = np.stack([np.asarray(im) for im in load_source("digits")["test"]["image"][:60]])
    np.save(tmp_path / "pixels.npy", pixels)
    np.save(tmp_path / "images.npy", images)
    done = run_plain(_CARD_SNIPPET, tmp_path, (snippet, str(tmp_path / "images.npy"), str(tmp_path / "pixels.npy")))
    assert done.returncode == 0, done.stderr[-3000:]
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert shown["imported"] == []
    with torch.no_grad():
        expected = audited(pixel_values=torch.tensor(pixels)).logits.argmax(-1).tolist()
    assert shown["argmax"] == expected
    assert shown["pipeline"] == [audited.config.id2label[i] for i in expected]


def test_published_model_loads_and_scores_as_reported(digits_run):
    out, result, _ = digits_run
    recipe = load_recipe(ROOT / "recipes" / "digits_vit.yaml", output_dir=str(out))
    from hf_fairquant.data import load_grouped_dataset

    splits, spec = load_grouped_dataset(recipe.data)
    test = splits["test"]
    preds = predict(load_quantized(out), test).predictions
    labels = np.asarray(test.with_format("numpy")["labels"][:])
    groups = np.asarray(spec.group_names(test))
    reported = json.loads((out / "results.json").read_text())["audit"]["quantized"][-1]["metrics"]["group_accuracy"]
    for g, acc in reported.items():
        assert np.mean(preds[groups == g] == labels[groups == g]) == pytest.approx(acc, abs=1e-12)


def test_card_numbers_are_the_results_numbers(digits_run):
    out, _, _ = digits_run
    results = json.loads((out / "results.json").read_text())
    card = ModelCard.load(out / "README.md", ignore_metadata_errors=False)  # the library parses model-index
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    fp = results["audit"]["fp"]["metrics"]
    q = results["audit"]["quantized"][-1]["metrics"]
    assert values["accuracy (FP)"] == fp["accuracy"]
    assert values[f"accuracy ({MITIGATED})"] == q["accuracy"]
    assert values[f"group accuracy gap ({MITIGATED})"] == q["accuracy_gap"]
    for g in results["audit"]["group_names"]:
        assert values[f"accuracy, group {g} (FP)"] == fp["group_accuracy"][g]
        assert values[f"accuracy, group {g} ({MITIGATED})"] == q["group_accuracy"][g]
        assert values[f"accuracy drop, group {g} ({MITIGATED} vs FP)"] == q["group_accuracy_drop"][g]
    deployed = results["deployment"]["files"]  # the ONNX Runtime file: overall, per group, size, speed-up
    assert len(values) == 4 + 3 * len(results["audit"]["group_names"]) + len(deployed) * (3 + len(results["audit"]["group_names"]))
    d = next(r for r in results["audit"]["quantized"] if r["name"] == "W8A8 ONNX")["metrics"]
    assert values["accuracy (W8A8 ONNX, deployed onnx/model_quantized.onnx)"] == d["accuracy"]
    assert values["file size in bytes (W8A8 ONNX, deployed onnx/model_quantized.onnx)"] == deployed[0]["size_bytes"]
    body = card.text
    assert f"| {MITIGATED} | {results['published']['effective_bits']:.2f} | {100 * q['accuracy']:.1f} |" in body
    assert f"{100 * q['accuracy_gap']:.1f} points" in body
    assert "derived, not demographic" in body and "hf-fairquant run recipes/digits_vit.yaml" in body
    assert card.data.to_dict()["license"] == "apache-2.0"
    import re

    for link in re.findall(r"\]\((plots/[^)]+)\)", body):  # every plot the card shows is in the folder
        assert (out / link).is_file(), link


def test_report_has_audit_explain_mitigation_and_its_plots(digits_run):
    out, _, _ = digits_run
    report = (out / "report.md").read_text()
    for heading in ["## Audit", "## Why: explaining", "## Mitigation: " + MITIGATED]:
        assert heading in report
    import json
    import re

    results = json.loads((out / "results.json").read_text())
    fp_s = results["audit"]["settings"]["timings_s"]["FP"]["evaluate_s"]
    stages = re.search(r"In FP evaluation passes \(one over the \d+ eval examples took [\d.]+ s\): ([^\n]+)\.", report)
    assert stages, "the stage-time line in FP passes"
    shown = dict(item.rsplit(" ", 1) for item in stages.group(1).split(", "))
    assert float(shown["explain"]) == pytest.approx(results["wall_time_s"]["explain"] / fp_s, abs=0.051)
    assert results["audit"]["settings"]["timings_s"][MITIGATED]["evaluate_s"] > 0

    for link in re.findall(r"\]\((plots/[^)]+)\)", report):
        assert (out / link).is_file(), link


def test_train_command_mitigates_a_saved_model(digits_run, tmp_path, capsys):
    out, _, _ = digits_run
    recipe = _saved_model_recipe(out, tmp_path)
    target = tmp_path / "trained"
    target.mkdir()
    (target / "old.txt").write_text("replaced")
    assert main(["train", str(recipe), "--output-dir", str(target), "--overwrite"]) == 0
    results = json.loads((target / "results.json").read_text())
    assert [r["name"] for r in results["audit"]["quantized"]] == [MITIGATED]
    assert results["explain"] is None and not (target / "old.txt").exists()
    assert not (target / "fp_model").exists()  # a loaded FP model is not copied
    assert load_quantized(target) is not None
    assert MITIGATED in capsys.readouterr().out


def test_cli_audit_of_a_saved_model(digits_run, tmp_path, capsys):
    out, _, _ = digits_run
    code = main([
        "audit", "--model", str(out / "fp_model"), "--dataset", "digits", "--group-column", "group",
        "--long-tail-classes", "3,8", "--long-tail-fraction", "0.1", "--recipes", "w8a8,w2a8",
        "--n-boot", "0", "--output-dir", str(tmp_path / "audit"),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "W8A8" in printed and "W2A8" in printed
    first = json.loads((out / "results.json").read_text())["audit"]
    again = json.loads((tmp_path / "audit" / "results.json").read_text())["audit"]
    # same data, same preprocessing, same weights: the reloaded FP model scores the same
    assert again["fp"]["metrics"]["group_accuracy"] == first["fp"]["metrics"]["group_accuracy"]
    assert not (tmp_path / "audit" / "README.md").exists()  # nothing published: no card


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    code = main(["audit", "--model", "x", "--dataset", "digits", "--group-column", "sex", "--output-dir", str(tmp_path)])
    assert code == 2  # the model's config is read first (a small download), before any data loads
    err = capsys.readouterr().err
    assert "model 'x' is not a local folder, and loading it from the Hub failed" in err and "Traceback" not in err


def test_deployed_onnx_model_is_audited_and_carded(digits_run):
    out, _, screen = digits_run
    results = json.loads((out / "results.json").read_text())
    files = results["deployment"]["files"]
    assert [f["file"] for f in files] == ["onnx/model_quantized.onnx"]
    assert files[0]["size_bytes"] == (out / "onnx" / "model_quantized.onnx").stat().st_size
    assert files[0]["size_bytes"] < 0.6 * files[0]["fp32_size_bytes"]
    assert files[0]["fp32_max_abs_logit_difference"] < 1e-4
    assert files[0]["speedup"]["vs_torch_fp32"] > 0
    assert MITIGATED in results["deployment"]["not_exported"]
    comparison = results["audit"]["deployment"]["W8A8"]
    deployed = next(r for r in results["audit"]["quantized"] if r["name"] == "W8A8 ONNX")["metrics"]
    simulated = next(r for r in results["audit"]["quantized"] if r["name"] == "W8A8")["metrics"]
    for g in results["audit"]["group_names"]:
        assert comparison["group_accuracy_difference"][g] == pytest.approx(
            deployed["group_accuracy"][g] - simulated["group_accuracy"][g])
    report = (out / "report.md").read_text()
    assert "Simulated vs deployed" in report and "Deployed on a CPU: ONNX Runtime" in report
    card = ModelCard.load(out / "README.md")
    names = [r.metric_name for r in card.data.eval_results]
    assert "accuracy, group tail (W8A8 ONNX, deployed onnx/model_quantized.onnx)" in names
    assert any(n.startswith("file size in bytes (W8A8 ONNX") for n in names)
    assert any(n.startswith("throughput vs torch FP32, batch 32 (W8A8 ONNX") for n in names)
    assert "## Run it with onnxruntime" in card.content


def test_cli_export_of_a_saved_model(digits_run, tmp_path, capsys):
    out, _, _ = digits_run
    code = main([
        "export", "--model", str(out / "fp_model"), "--dataset", "digits", "--group-column", "group",
        "--long-tail-classes", "3,8", "--long-tail-fraction", "0.1", "--recipes", "w8", "w8a8",
        "--n-boot", "0", "--speed-batches", "1", "--output-dir", str(tmp_path / "export"),
    ])
    assert code == 0, capsys.readouterr().err
    target = tmp_path / "export"
    assert {p.name for p in (target / "onnx").iterdir()} == {"model.onnx", "model_quantized.onnx", "model_w8a8.onnx"}
    results = json.loads((target / "results.json").read_text())
    assert [r["name"] for r in results["audit"]["quantized"]] == ["W8", "W8A8", "W8 ONNX", "W8A8 ONNX"]
    assert set(results["audit"]["deployment"]) == {"W8", "W8A8"}
    code = main(["export", "--model", str(out / "fp_model"), "--dataset", "digits", "--recipes", "w2a8",
                 "--output-dir", str(tmp_path / "refused")])
    assert code == 2
    assert "no CPU kernel for 2-bit weights" in capsys.readouterr().err


_ONNXRUNTIME_ONLY = """
import json, sys
import numpy as np
snippet, inputs_path, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
exec(snippet)  # the model card's "run it with onnxruntime" code, as written (downloads from the Hub)
predictions = session.run(["logits"], {"pixel_values": np.load(inputs_path)})[0].argmax(-1)
np.save(out_path, predictions)
print(json.dumps(sorted(m for m in ("hf_fairquant", "torch", "transformers") if m in sys.modules)))
"""


def test_pushed_onnx_loads_with_onnxruntime_alone(digits_run, hub, tmp_path):
    import re
    import subprocess
    import sys

    from hf_fairquant.data import load_grouped_dataset
    from hf_fairquant.hub import push_folder
    from hf_fairquant.quantization.onnx import load_onnx

    out, _, _ = digits_run
    push_folder(out, "me/digits-onnx")
    files = hub.repo("me/digits-onnx").commits[-1].files
    assert files["onnx/model_quantized.onnx"] == (out / "onnx" / "model_quantized.onnx").read_bytes()
    card = files["README.md"].decode().replace(str(out), "me/digits-onnx")  # the card names the local folder
    snippet = re.search(r"## Run it with onnxruntime.*?```python\n(.*?)```", card, re.S).group(1)
    assert 'hf_hub_download("me/digits-onnx", "onnx/model_quantized.onnx")' in snippet

    recipe = load_recipe(ROOT / "recipes" / "digits_vit.yaml", output_dir=str(out))
    splits, spec = load_grouped_dataset(recipe.data)
    test = splits["test"]
    np.save(tmp_path / "x.npy", np.asarray(test.with_format("numpy")["pixel_values"][:], dtype=np.float32))
    done = subprocess.run(
        [sys.executable, "-c", _ONNXRUNTIME_ONLY, snippet, str(tmp_path / "x.npy"), str(tmp_path / "p.npy")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # neither hf_fairquant nor torch was imported
    remote = np.load(tmp_path / "p.npy")
    local = predict(load_onnx(out), test).predictions
    assert np.array_equal(remote, local)
    labels = np.asarray(test.with_format("numpy")["labels"][:])
    groups = np.asarray(spec.group_names(test))
    results = json.loads((out / "results.json").read_text())
    audited = next(r for r in results["audit"]["quantized"] if r["name"] == "W8A8 ONNX")["metrics"]["group_accuracy"]
    for g, acc in audited.items():
        assert np.mean(remote[groups == g] == labels[groups == g]) == pytest.approx(acc, abs=1e-12)


# ---------------------------------------------------------------------------- the Hub (loopback server)
def _saved_model_recipe(out: Path, tmp_path: Path, publish_backend: str | None = None) -> Path:
    """The digits recipe on the run's saved FP model, one epoch of fair QAT: a fast `train`."""
    raw = yaml.safe_load((ROOT / "recipes" / "digits_vit.yaml").read_text())
    raw["model"] = {"name_or_path": str(out / "fp_model")}
    del raw["training"]
    raw["mitigation"]["num_train_epochs"] = 1
    if publish_backend is not None:
        raw["card"]["publish_backend"] = publish_backend
    path = tmp_path / "saved.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_push_and_load_back_from_the_hub(digits_run, hub, tmp_path, capsys):
    out, _, _ = digits_run
    target = tmp_path / "pushed"
    assert main(["train", str(_saved_model_recipe(out, tmp_path, publish_backend="quanto")), "--output-dir", str(target),
                 "--push-to-hub", "me/digits-fair-w2a8"]) == 0
    commits = hub.repo("me/digits-fair-w2a8").commits
    assert len(commits) == 2  # the repo's initial commit, then ours: one commit for the whole folder
    files = commits[-1].files
    assert files["results.json"] == (target / "results.json").read_bytes()
    assert {"README.md", "report.md", "model.safetensors", "quantization_map.json", "plots/group_accuracy.png"} <= set(files)
    card = files["README.md"].decode()
    assert 'load_quantized("me/digits-fair-w2a8")' in card
    ModelCard(card).validate()  # the loopback Hub's YAML validation accepts the card's metadata
    import torch

    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    local, remote = load_quantized(target), load_quantized("me/digits-fair-w2a8")
    with torch.no_grad():
        assert torch.equal(local(pixel_values=x).logits, remote(pixel_values=x).logits)
    printed = capsys.readouterr()
    assert hub_fixtures.TOKEN not in printed.out + printed.err + card + (target / "report.md").read_text()
    assert hub_fixtures.TOKEN not in (target / "results.json").read_text()


def test_push_command_reports_a_failing_hub_and_a_retry_succeeds(digits_run, hub, capsys, monkeypatch):
    out, _, _ = digits_run
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr("time.sleep", lambda s: None)  # huggingface_hub's retry back-off
    hub.fail_next("commit", status=500, times=100)
    assert main(["push", str(out), "--repo-id", "me/digits"]) == 2
    err = capsys.readouterr().err
    assert "push of" in err and "me/digits failed" in err and "unchanged" in err and "retries" in err
    assert hub_fixtures.TOKEN not in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    hub.fail_next("commit", times=0)
    assert main(["push", str(out), "--repo-id", "me/digits"]) == 0
    assert load_quantized("me/digits") is not None


def test_push_without_a_token_says_how_to_give_one_before_any_work(tmp_path, monkeypatch, capsys):
    import hf_fairquant.run.models as pipeline

    with hub_fixtures.LoopbackHub(tokens={hub_fixtures.TOKEN}) as server:
        hub_fixtures.point_huggingface_hub_at(monkeypatch, server.url, tmp_path / "home", None)
        monkeypatch.setattr(pipeline, "load_raw_grouped_dataset", lambda *a, **k: pytest.fail("loaded data first"))
        code = main(["run", str(ROOT / "recipes" / "digits_vit.yaml"), "--output-dir", str(tmp_path / "o"),
                     "--push-to-hub", "me/x"])
        assert code == 2 and not server.requests
    err = capsys.readouterr().err
    assert "no Hugging Face token" in err and "HF_TOKEN" in err and "hf auth login" in err


def test_explain_picks_the_recipe_that_hurts_the_worst_group_most():
    from types import SimpleNamespace as NS

    from hf_fairquant.run import worst_recipe

    def result(name, bits, worst, gap_change):
        return NS(name=name, effective_bits=bits, metrics={"worst_group_accuracy": worst, "gap_change": gap_change})

    fp = NS(metrics={"worst_group_accuracy": 0.68})
    # W2A8 wrecks both groups (the gap shrinks) yet lowers the worst group most; W4A8 widens the gap more
    report = NS(fp=fp, quantized=[result("W4A8", 4, 0.64, 0.04), result("W2A8", 2, 0.24, -0.28)])
    assert worst_recipe(report) == "W2A8"
    report = NS(fp=fp, quantized=[result("W4", 4, 0.64, 0.03), result("W4A8", 4.0, 0.64, 0.04), result("W8A8", 8, 0.64, 0)])
    assert worst_recipe(report) == "W4"  # a tie: the first of the fewest bits
    assert worst_recipe(NS(fp=fp, quantized=[])) is None


def test_a_subset_of_an_offline_source_is_an_error(tmp_path):
    recipe = load_recipe(_write(tmp_path, "data: {source: digits, subset: '0.25'}\nmodel: {name_or_path: x}\n"))
    with pytest.raises(ValueError, match="data.subset applies to Hub datasets"):
        dry_run(recipe)


def test_hub_ids_with_dots_are_not_taken_for_missing_paths(tmp_path):
    recipe = load_recipe(_write(tmp_path, "data: {source: digits}\nmodel: {name_or_path: Qwen/Qwen2.5-0.5B}\n"))
    assert "model: Qwen/Qwen2.5-0.5B" in dry_run(recipe)  # no download in a dry run, and no path error
    recipe = load_recipe(_write(tmp_path, "data: {source: digits}\nmodel: {name_or_path: runs/a/fp_model}\n"))
    with pytest.raises(FileNotFoundError, match="model path runs/a/fp_model does not exist"):
        dry_run(recipe)


# ---------------------------------------------------------------------------- torchao: plain transformers
PLAIN_PIPELINE = """
import json, sys
import numpy as np
from transformers import AutoModelForImageClassification, pipeline
pixels, images, out = torch.load(sys.argv[1]), np.load(sys.argv[2]), {}
for target in sys.argv[3:]:
    model = AutoModelForImageClassification.from_pretrained(target)
    with torch.no_grad():
        torch.save(model(pixel_values=pixels).logits, target.replace("/", "_") + ".logits.pt")
    classify = pipeline("image-classification", model=target)
    out[target] = [r[0]["label"] for r in classify([im[..., None] for im in images], top_k=1)]
print(json.dumps(out))
"""


def test_a_linear_only_recipe_publishes_a_model_plain_transformers_loads(digits_run, hub, tmp_path):
    """publish_backend auto: every quantized module is a Linear → torchao; the folder and its Hub
    repo load with plain transformers (no hf_fairquant in the process), `pipeline()` included,
    with the audited model's exact logits and predictions."""
    import torch

    from hf_fairquant.data import load_grouped_dataset, load_source
    from tests.plain_transformers import run_plain

    out, _, _ = digits_run
    raw = yaml.safe_load(_saved_model_recipe(out, tmp_path).read_text())
    raw["mitigation"]["quantization"] = {"preset": "w4a8", "name": "w4a8-linear", "overrides": {"classifier": "w8a8"},
                                         "exclude": ["vit.embeddings.*"]}
    raw["audit"] = {"recipes": ["w4a8"], "n_boot": 20}
    raw.pop("export", None)  # the ONNX export is tested elsewhere; here only the torchao artifact
    recipe = tmp_path / "linear.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    target = tmp_path / "published"
    assert main(["run", str(recipe), "--output-dir", str(target), "--push-to-hub", "me/digits-torchao"]) == 0
    results = json.loads((target / "results.json").read_text())
    assert results["published"]["backend"] == "torchao"
    assert json.loads((target / "config.json").read_text())["quantization_config"]["quant_method"] == "torchao"
    assert (target / "preprocessor_config.json").is_file() and not (target / "quantization_map.json").exists()
    first_lines = (target / "README.md").read_text().split("\n---\n", 1)[1].strip().splitlines()[:3]
    assert any("AutoModelForImageClassification.from_pretrained" in line and "no hf_fairquant needed" in line
               for line in first_lines), first_lines

    parsed = load_recipe(recipe, output_dir=str(target))
    splits, spec = load_grouped_dataset(parsed.data)
    test = splits["test"].select(range(120))
    pixels = torch.tensor(np.asarray(test.with_format("numpy")["pixel_values"][:]))
    audited = load_quantized(target)
    with torch.no_grad():
        logits = audited(pixel_values=pixels).logits
    images = np.stack([np.asarray(im) for im in load_source("digits")["test"]["image"][:120]])
    torch.save(pixels, tmp_path / "pixels.pt")
    np.save(tmp_path / "images.npy", images)
    args = (str(tmp_path / "pixels.pt"), str(tmp_path / "images.npy"), str(target), "me/digits-torchao")
    done = run_plain(PLAIN_PIPELINE, tmp_path, args)
    assert done.returncode == 0, done.stderr[-3000:]
    labels = json.loads(done.stdout.strip().splitlines()[-1])
    expected = [audited.config.id2label[i] for i in logits.argmax(-1).tolist()]
    for name in (str(target), "me/digits-torchao"):
        assert torch.equal(torch.load(tmp_path / (name.replace("/", "_") + ".logits.pt")), logits), name
        assert labels[name] == expected, name
