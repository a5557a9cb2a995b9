"""Issue #22, items 1 and 3 through the CLI and YAML: pre-quantized checkpoints audited against
their base (``hf-fairquant audit --model BASE --quantized-model FOLDER ...``), formats this machine
cannot load refused before any work, and a transformers quantization config as a YAML recipe."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml

from hf_fairquant.cli import main
from tests import hub_fixtures
from tests.conftest import tiny_vit

hub = hub_fixtures.hub

needs = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("bitsandbytes", "torchao")),
    reason="needs the quantizers extra (bitsandbytes) and torchao",
)
DATA = ["--dataset", "digits", "--group-column", "group", "--long-tail-classes", "3,8", "--long-tail-fraction", "0.1",
        "--n-boot", "0"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A full-precision tiny ViT (digits-sized) and its versions quantized by transformers' configs,
    each saved with ``save_pretrained`` the way a Hub checkpoint is (NF4 before any forward)."""
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import (
        BitsAndBytesConfig,
        TorchAoConfig,
        ViTForImageClassification,
    )

    root = tmp_path_factory.mktemp("checkpoints")
    tiny_vit().save_pretrained(root / "base")
    configs = {
        "vit-torchao-int8": TorchAoConfig(Int8WeightOnlyConfig()),
        "vit-bnb-int8": BitsAndBytesConfig(load_in_8bit=True),
        "vit-bnb-nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", llm_int8_skip_modules=["classifier"]),
    }
    for name, config in configs.items():
        ViTForImageClassification.from_pretrained(root / "base", quantization_config=config).save_pretrained(root / name)
    return root


@needs
def test_quantized_model_audits_local_pre_quantized_folders_against_the_base(folders, tmp_path, capsys):
    out = tmp_path / "audit"
    args = ["audit", "--model", str(folders / "base"), *DATA, "--output-dir", str(out)]
    for name in ("vit-torchao-int8", "vit-bnb-int8", "vit-bnb-nf4"):
        args += ["--quantized-model", str(folders / name)]
    assert main(args) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())["audit"]
    rows = {r["name"]: r for r in results["quantized"]}
    assert list(rows) == ["vit-torchao-int8", "vit-bnb-int8", "vit-bnb-nf4"]  # only the checkpoints: no presets
    assert "torchao" in rows["vit-torchao-int8"]["quantization"]
    assert "bitsandbytes" in rows["vit-bnb-int8"]["quantization"] and "bitsandbytes" in rows["vit-bnb-nf4"]["quantization"]
    assert 8 < rows["vit-torchao-int8"]["effective_bits"] < 8.2 and 4 < rows["vit-bnb-nf4"]["effective_bits"] < 4.5
    for row in rows.values():
        assert row["recipe"]["checkpoint"].endswith(row["name"])
        assert 0 <= row["metrics"]["flip_rate"] <= 1
    printed = capsys.readouterr().out
    assert "vit-bnb-nf4" in printed and "vit-torchao-int8" in printed


@pytest.mark.parametrize("quantization_config, message", [
    ({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False},
     r"a pre-quantized gptq checkpoint \(GPTQConfig\) cannot load on this machine: .*on a CUDA GPU"),
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm", "zero_point": True},
     r"a pre-quantized awq checkpoint \(AwqConfig\) cannot load on this machine: .*gptqmodel.*on a CUDA GPU"),
    ({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {}},
     r"a pre-quantized compressed-tensors checkpoint cannot load on this machine: .*compressed-tensors"),
])
def test_formats_this_machine_cannot_load_are_refused_before_any_work(quantization_config, message, tmp_path, capsys):
    base = tmp_path / "base"
    tiny_vit().save_pretrained(base)
    shutil.copytree(base, tmp_path / "quantized")
    config = json.loads((base / "config.json").read_text())
    (tmp_path / "quantized" / "config.json").write_text(json.dumps({**config, "quantization_config": quantization_config}))
    code = main(["audit", "--model", str(base), "--quantized-model", str(tmp_path / "quantized"), *DATA,
                 "--output-dir", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "hf-fairquant audit: error: " in err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()  # refused by the static check: no data loaded, nothing written


@needs
def test_a_transformers_config_is_a_yaml_and_cli_recipe(folders, tmp_path, capsys):
    recipe = {
        "data": {"source": "digits", "long_tail_classes": ["3", "8"], "long_tail_fraction": 0.1, "group_columns": ["group"]},
        "model": {"name_or_path": str(folders / "base")},
        "audit": {"recipes": ["w8", {"transformers": "BitsAndBytesConfig", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                     "llm_int8_skip_modules": ["classifier"]},
                              "torchao-int4", {"preset": "w8", "exclude": ["vit.layers.1.*"], "name": "w8-half"}],
                  "n_boot": 0},
        "explain": {"enabled": False},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    assert main(["run", str(path), "--output-dir", str(out)]) == 0, capsys.readouterr().err
    screen = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())["audit"]
    names = [r["name"] for r in results["quantized"]]
    assert names[:2] == ["W8", "bnb-nf4"] and "torchao-int4" in names and "W8-HALF" in names
    nf4 = next(r for r in results["quantized"] if r["name"] == "bnb-nf4")
    assert nf4["recipe"]["transformers"] == "BitsAndBytesConfig" and nf4["recipe"]["library"] == "bitsandbytes"
    assert set(results["round_trips"]) == {"bnb-nf4", "torchao-int4"} and results["round_trips"]["torchao-int4"]["identical"]
    if not results["round_trips"]["bnb-nf4"]["identical"]:  # this CPU repacks NF4 weights on an eval forward
        assert "bnb-nf4 reloaded" in names and "save → reload: bnb-nf4: the reloaded artifact differs" in screen
    # the plan that leaves half the weights float says so, on the screen and in the report
    assert "float weights: W8-HALF leaves" in screen
    assert "**Float weights:** W8-HALF leaves" in (out / "report.md").read_text()

    # the same configs from the command line (aliases and ConfigClass:key=value)
    code = main(["audit", "--model", str(folders / "base"), *DATA, "--recipes", "bnb-int8",
                 "BitsAndBytesConfig:load_in_4bit=true:bnb_4bit_quant_type=fp4:llm_int8_skip_modules=[classifier]",
                 "--output-dir", str(tmp_path / "cli")])
    assert code == 0, capsys.readouterr().err
    names = [r["name"] for r in json.loads((tmp_path / "cli" / "results.json").read_text())["audit"]["quantized"]]
    assert names[:2] == ["bnb-int8", "bnb-fp4"]


def test_explain_refuses_a_transformers_config_before_any_work(tmp_path):
    from hf_fairquant.run import dry_run, load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "digits"}, "model": {"name_or_path": "x/y"},
                                    "audit": {"recipes": ["w4", "bnb-int8"]}, "explain": {"recipe": "bnb-int8"}}))
    with pytest.raises(ValueError, match="explain.recipe 'bnb-int8' is a transformers quantization config"):
        dry_run(load_recipe(path))


@needs
def test_the_readme_section_runs_as_written(folders):
    """README "Audit a model quantized elsewhere": its Python block, on the tiny ViT and its folders."""
    import re

    from tests.conftest import image_dataset

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Audit a model quantized elsewhere\n(.*?)^## ", readme, flags=re.S | re.M).group(1)
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    data = image_dataset(32)
    scope = {"model": tiny_vit(), "test": data, "train": data, "folder": str(folders / "base"),
             "int8_folder": str(folders / "vit-torchao-int8")}
    exec(compile(block, "README.md (quantized elsewhere)", "exec"), scope)
    assert [r.name for r in scope["report"].quantized] == ["int8"]
    assert "torchao" in scope["report"].quantized[0].quantization


@needs
def test_quantized_model_from_the_hub(folders, hub, tmp_path, capsys):
    """A Hub id: its config.json is checked first (a GPTQ repo is refused before any data loads),
    then the checkpoint downloads and is audited against the base."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo("me/vit-torchao-int8")
    api.upload_folder(folder_path=str(folders / "vit-torchao-int8"), repo_id="me/vit-torchao-int8")
    gptq = tmp_path / "gptq"
    shutil.copytree(folders / "base", gptq)
    config = json.loads((gptq / "config.json").read_text())
    (gptq / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "gptq", "bits": 4}}))
    api.create_repo("me/vit-gptq")
    api.upload_folder(folder_path=str(gptq), repo_id="me/vit-gptq")

    out = tmp_path / "audit"
    assert main(["audit", "--model", str(folders / "base"), "--quantized-model", "me/vit-torchao-int8", *DATA,
                 "--output-dir", str(out)]) == 0, capsys.readouterr().err
    rows = json.loads((out / "results.json").read_text())["audit"]["quantized"]
    assert [r["name"] for r in rows] == ["me/vit-torchao-int8"] and "torchao" in rows[0]["quantization"]
    code = main(["audit", "--model", str(folders / "base"), "--quantized-model", "me/vit-gptq", *DATA,
                 "--output-dir", str(tmp_path / "refused")])
    assert code == 2 and "me/vit-gptq: a pre-quantized gptq checkpoint (GPTQConfig) cannot load" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
