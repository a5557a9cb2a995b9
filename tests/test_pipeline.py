import json
from pathlib import Path

import pytest

from hf_fairquant.cli import main
from hf_fairquant.pipeline import load_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_parses(recipe):
    parsed = load_recipe(recipe, output_dir="/tmp/unused")
    assert parsed.audit.recipes and parsed.data.source


def test_unknown_key_names_key_and_section(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {source: digits, colour: red}\nmodel: {name_or_path: x}\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['colour'\] in recipe section 'data'"):
        load_recipe(bad)
    bad.write_text("model: {name_or_path: x}\ntraining: {num_epochs: 3}\n")
    with pytest.raises(ValueError, match=r"\['num_epochs'\] in recipe section 'training'"):
        load_recipe(bad)
    bad.write_text("modle: {name_or_path: x}\n")
    with pytest.raises(ValueError, match=r"unknown top-level key\(s\) \['modle'\]"):
        load_recipe(bad)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    assert main(["run", str(ROOT / "recipes" / "digits_vit.yaml"), "--output-dir", str(out)]) == 0
    return out


def test_run_trains_saves_and_audits(digits_run, capsys):
    report = json.loads((digits_run / "audit.json").read_text())
    assert [r["name"] for r in report["quantized"]] == ["W8A8", "W4A8", "W4", "W2A8"]
    assert report["group_names"] == ["head", "tail"]
    assert report["fp"]["metrics"]["accuracy"] > 0.7  # the tiny ViT really learned digits
    assert (digits_run / "fp_model" / "config.json").is_file()
    assert "| W2A8 |" in (digits_run / "audit.md").read_text()
    assert not [p for p in digits_run.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_cli_audit_of_a_saved_model(digits_run, tmp_path, capsys):
    code = main([
        "audit", "--model", str(digits_run / "fp_model"), "--dataset", "digits", "--group-column", "group",
        "--long-tail-classes", "3,8", "--long-tail-fraction", "0.1", "--recipes", "w8a8,w2a8",
        "--n-boot", "0", "--output-dir", str(tmp_path / "audit"),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| W8A8 |" in printed and "| W2A8 |" in printed
    first = json.loads((digits_run / "audit.json").read_text())
    again = json.loads((tmp_path / "audit" / "audit.json").read_text())
    # same data, same preprocessing, same weights: the reloaded FP model scores the same
    assert again["fp"]["metrics"]["group_accuracy"] == first["fp"]["metrics"]["group_accuracy"]


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    code = main(["audit", "--model", "x", "--dataset", "digits", "--group-column", "sex", "--output-dir", str(tmp_path)])
    assert code == 2
    assert "group column(s) ['sex'] not found" in capsys.readouterr().err
