"""``hf-fairquant explain`` on a saved model and the offline digits data."""

import json

import pytest

from hf_fairquant import quantize, save_quantized
from hf_fairquant.cli import main
from tests.conftest import tiny_vit

ARGS = ["--dataset", "digits", "--long-tail-classes", "3,8", "--long-tail-fraction", "0.1",
        "--examples-per-group", "16", "--probes", "2", "--max-iterations", "50", "--hvp-budget", "12"]  # fmt: skip


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit") / "fp_model"
    tiny_vit().save_pretrained(folder)
    return folder


def test_cli_explain_writes_json_markdown_and_plots(saved_model, tmp_path, capsys):
    out = tmp_path / "explain"
    assert main(["explain", "--model", str(saved_model), "--recipe", "w4a8", "--output-dir", str(out), *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "## 5. The bound" in printed and "| head |" in printed and "| tail |" in printed
    data = json.loads((out / "explain.json").read_text())
    assert data["group_names"] == ["head", "tail"] and data["quantization"]["name"] == "W4A8"
    assert data["settings"]["calibrated_on"] == "calibration_dataset"
    assert {g["examples"] for g in data["gradients"].values()} == {16}
    assert all(g["noise_floor"] > 0 for g in data["gradients"].values())
    assert sorted(p.name for p in (out / "explain_plots").iterdir()) == [
        "activation_drift.png", "gradients_curvature.png", "groups.png",
    ]


def test_cli_explain_of_a_saved_quantized_model(saved_model, tmp_path, capsys):
    qfolder = save_quantized(quantize(tiny_vit(), "w8"), tmp_path / "q")
    out = tmp_path / "explain"
    code = main(["explain", "--model", str(saved_model), "--quantized-model", str(qfolder), "--output-dir", str(out), *ARGS])
    assert code == 0
    assert json.loads((out / "explain.json").read_text())["quantization"]["name"] == "W8 (given model)"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--recipe", "w3a8"], "unsupported weight bits 3"),
        (["--group-column", "sex"], "group column(s) ['sex'] not found"),
        (["--examples-per-group", "100"], "examples_per_group=100 but group(s) 'tail' has 89 example(s)"),
    ],
)
def test_cli_explain_reports_bad_input_without_a_traceback(saved_model, tmp_path, capsys, extra, message):
    code = main(["explain", "--model", str(saved_model), "--output-dir", str(tmp_path), *ARGS, *extra])
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--probes", "0"], "explain probes must be an integer ≥ 1, got 0"),
        (["--max-iterations", "-3"], "explain max_iterations must be an integer ≥ 1, got -3"),
        (["--examples-per-group", "some"], "examples_per_group must be a positive int, 'all', or None"),
        (["--method", "qr"], "unknown eigen_method 'qr'; allowed: ['lanczos', 'power']"),
        (["--hvp-budget", "4"], "hvp_budget=4 Hessian-vector products per group cannot cover probes=2"),
        (["--chunk-size", "0"], "explain chunk_size must be an integer ≥ 1, got 0"),
    ],
)
def test_cli_rejects_bad_options_before_loading_anything(saved_model, tmp_path, capsys, extra, message):
    code = main(["explain", "--model", str(tmp_path / "no-such-model"), "--output-dir", str(tmp_path), *ARGS, *extra])
    assert code == 2  # the options are checked before the (missing) model is looked at
    assert message in capsys.readouterr().err


def test_cli_explain_refuses_a_non_empty_folder_and_the_working_folder_before_loading(saved_model, tmp_path, capsys,
                                                                                       monkeypatch):
    import hf_fairquant.run as run

    monkeypatch.setattr(run, "load_pretrained", lambda *a, **k: pytest.fail("loaded before checking"))
    out = tmp_path / "explain"
    out.mkdir()
    (out / "explain.json").write_text("{}")  # an earlier explain
    assert main(["explain", "--model", str(saved_model), "--output-dir", str(out), *ARGS]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "explain.json").read_text() == "{}"
    monkeypatch.chdir(out)
    assert main(["explain", "--model", str(saved_model), "--output-dir", ".", "--overwrite", *ARGS]) == 2
    assert "is the working folder or contains it" in capsys.readouterr().err
