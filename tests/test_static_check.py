"""Issue 14, items 3, 6 and 7: every bad option is stopped by one static check (or by the data
check right after loading), before any model is trained or any forward pass runs."""


import pytest

import hf_fairquant.run.runner as pipeline
from hf_fairquant.audit import audit
from hf_fairquant.cli import main
from hf_fairquant.errors import FairQuantError
from hf_fairquant.run import dry_run, load_recipe, run
from tests.conftest import image_dataset, tiny_resnet
from tests.fail_early_fixtures import save_data, tiny_recipe, write_recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return save_data(tmp_path_factory.mktemp("data") / "d", ["a", "b", "c"], ["a", "b", "c"], n_train=36, n_test=18)


@pytest.fixture
def no_work(monkeypatch):
    """Any model building, training or forward pass fails the test."""
    monkeypatch.setattr(pipeline, "build_model", lambda *a, **k: pytest.fail("built a model before the check"))
    monkeypatch.setattr(pipeline, "train_fp_model", lambda *a, **k: pytest.fail("trained before the check"))


def _load(tmp_path, data_dir, **sections):
    return load_recipe(write_recipe(tmp_path / "r.yaml", tiny_recipe(data_dir, **sections)), output_dir=str(tmp_path / "out"))


def test_yaml_numbers_read_as_strings_are_coerced(tmp_path, data):
    text = (
        f"data: {{source: {data}}}\nmodel: {{name_or_path: x}}\n"
        "training: {learning_rate: 5e-4, num_train_epochs: '2', max_steps: 1e1, weight_decay: '0'}\n"
        "audit: {n_boot: 1e3, confidence_level: '0.9', calibration_size: '64'}\n"
        "explain: {examples_per_group: '16', tol: 1e-3}\n"
        "mitigation: {quantization: w4, learning_rate: 2e-3, dro_step_size: 1e-2, sampling_power: '0.5'}\n"
    )
    recipe = load_recipe(_text(tmp_path, text))
    assert recipe.training.learning_rate == 5e-4 and recipe.training.num_train_epochs == 2.0
    assert recipe.training.max_steps == 10 and isinstance(recipe.training.max_steps, int)
    assert (recipe.audit.n_boot, recipe.audit.confidence_level, recipe.audit.calibration_size) == (1000, 0.9, 64)
    assert recipe.explain.examples_per_group == 16 and recipe.explain.tol == 1e-3
    assert recipe.mitigation.learning_rate == 2e-3 and recipe.mitigation.sampling_power == 0.5


def _text(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("training", {"learning_rate": "fast"}, r"training\.learning_rate must be a number, got 'fast'"),
        ("training", {"max_steps": 2.5}, r"training\.max_steps must be an integer, got 2\.5"),
        ("training", {"lr_scheduler_type": "zigzag"}, r"recipe section 'training': .*zigzag"),
        ("audit", {"n_boot": -1}, r"audit n_boot must be an integer ≥ 0, got -1"),
        ("audit", {"n_boot": "many"}, r"audit\.n_boot must be an integer, got 'many'"),
        ("audit", {"confidence_level": 1.5}, r"audit confidence_level must be a number in \(0, 1\)"),
        ("audit", {"calibration_size": 0}, r"audit calibration_size must be an integer ≥ 1, got 0"),
        ("audit", {"batch_size": 0}, r"audit batch_size must be an integer ≥ 1, got 0"),
        ("audit", {"recipes": [{"preset": "w4", "weight_bits": 8}]}, r"preset 'w4' means weight_bits=4"),
        ("audit", {"recipes": ["w4", "w4"]}, r"the name 'w4' is already taken"),
        ("explain", {"enabled": True, "eigen_method": "qr"}, r"unknown eigen_method 'qr'; allowed: \['lanczos', 'power'\]"),
        ("explain", {"enabled": True, "parameters": "some"}, r"unknown parameters 'some'; allowed: \['quantized', 'all'\]"),
        ("explain", {"enabled": True, "examples_per_group": 0}, r"examples_per_group must be a positive int, 'all', or None"),
        ("explain", {"enabled": True, "probes": 0}, r"explain probes must be an integer ≥ 1"),
        ("data", {"source": "fashion-mnist"}, r"not an offline source \(did you mean 'fashion_mnist'\?\).*offline sources: \[.*'digits', 'fashion_mnist'.*\]"),
        ("data", {"source": "digts"}, r"did you mean 'digits'"),
        ("data", {"source": "./no/such/file.csv"}, r"not an existing local file or folder; offline sources"),
        ("data", {"long_tail_fraction": 0}, r"long_tail_fraction must be in \(0, 1\]"),
        ("data", {"eval_split": "train"}, r"train_split and data.eval_split are both 'train'"),
        ("mitigation", {"quantization": "w4", "group_column": "labels"}, "group_column 'labels' is the label column"),
        ("mitigation", {"quantization": "w4", "label_names": ["labels"]}, r"must include \['labels', 'group'\]"),
        ("model", {"config": {"model_type": "resnett"}}, r"model_type 'resnett' is not a transformers image-classification model type \(did you mean 'resnet'"),
        ("model", {"config": {"model_type": "bert"}}, r"'bert' is not a transformers image-classification model type"),
        ("training", {"learning_rate": -1}, r"recipe section 'training': learning_rate must be >= 0, got -1"),
        ("training", {"max_steps": 0}, r"there is nothing to train: max_steps=0"),
        ("model", {"name_or_path": ["a", "b"]}, r"model\.name_or_path must be a string or null, got \[.a., .b.\]"),
    ],
)
def test_bad_options_fail_the_static_check(tmp_path, data, monkeypatch, section, values, message):
    monkeypatch.setattr(pipeline, "load_recipe_data", lambda *a, **k: pytest.fail("loaded data"))
    with pytest.raises(FairQuantError, match=message):
        recipe = _load(tmp_path, data, **{section: values})
        dry_run(recipe)
    with pytest.raises(FairQuantError, match=message):
        recipe = _load(tmp_path, data, **{section: values})
        run(recipe, echo=lambda *_: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"explain": {"enabled": True, "examples_per_group": 256}},
         r"explain\.examples_per_group=256 but the smallest group of split 'test', 'a', has 6 example\(s\); use at most 6"),
        ({"audit": {"recipes": ["w8a8"], "calibration_size": 2}}, r"audit\.calibration_size=2 is smaller than the number of groups, 3"),
        ({"mitigation": {"quantization": "w4", "group_column": "sex"}},
         r"mitigation\.group_column 'sex': column\(s\) \['sex'\] not in split 'train'"),
        ({"mitigation": {"quantization": "w4a8", "calibration_size": 2}}, r"mitigation\.calibration_size=2 is smaller than the number of groups, 3"),
        ({"mitigation": {"quantization": "auto:4", "calibration_size": 1}}, r"mitigation\.calibration_size=1 is smaller"),
        ({"mitigation": {"quantization": "w4", "group_weighting": {"a": 1, "b": 2}}}, r"missing \['c'\]"),
    ],
)
def test_data_dependent_checks_fail_before_any_model(tmp_path, data, no_work, sections, message):
    with pytest.raises(FairQuantError, match=message):
        run(_load(tmp_path, data, **sections), echo=lambda *_: None)
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_hub_dataset_that_cannot_be_loaded_is_a_fair_quant_error(tmp_path, data, no_work):
    with pytest.raises(FairQuantError, match=r"data source 'nobody-h14/none' is not an offline source .* as a Hub dataset failed"):
        run(_load(tmp_path, data, data={"source": "nobody-h14/none"}), echo=lambda *_: None)  # HF_DATASETS_OFFLINE=1


def test_the_readme_mapping_form_of_audit_recipes_runs_through_audit_and_explain(tmp_path, data):
    mixed = {"preset": "w4", "overrides": {"classifier*": "w8"}}
    recipe = _load(tmp_path, data, audit={"recipes": ["w8", mixed]},
                   explain={"enabled": True, "examples_per_group": 4, "probes": 2, "batch_size": 16})
    result = run(recipe, echo=lambda *_: None)
    names = [r.name for r in result.audit.quantized]
    assert names == ["W8", "W4+CLASSIFIER*:W8"]
    assert result.explained_recipe in names and result.explanation is not None


def test_cli_audit_reports_bad_options_with_exit_2_before_loading(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "load_recipe_data", lambda *a, **k: pytest.fail("loaded data"))
    base = ["audit", "--model", "x", "--dataset", str(data), "--output-dir", str(tmp_path / "o")]
    assert main([*base, "--batch-size", "0"]) == 2
    assert "audit batch_size must be an integer ≥ 1, got 0" in capsys.readouterr().err
    assert main([*base, "--recipes", "w4,w4"]) == 2
    assert "already taken" in capsys.readouterr().err


# ---------------------------------------------------------------------------- library entry points
def test_audit_accepts_a_column_list_and_refuses_other_group_specs():
    model, ds = tiny_resnet(), image_dataset(n=16)
    report = audit(model, ds, [], ["group"], n_boot=0, progress=False)
    assert report.group_columns == ["group"]
    with pytest.raises(FairQuantError, match="group_spec must be a GroupSpec, a group column name or a list of column names, got int 3"):
        audit(model, ds, [], 3, n_boot=0, progress=False)
    with pytest.raises(FairQuantError, match="audit batch_size must be an integer ≥ 1, got 0"):
        audit(model, ds, [], "group", batch_size=0, progress=False)
    with pytest.raises(FairQuantError, match=r"the name 'W8' is already taken"):
        audit(model, ds, ["w8"], "group", n_boot=0, progress=False, quantized_models={"W8": object()})


def test_allocate_bits_refuses_a_calibration_set_smaller_than_the_groups_before_any_pass(monkeypatch):
    import importlib

    allocation = importlib.import_module("hf_fairquant.allocation")

    monkeypatch.setattr(allocation, "measure_sensitivity", lambda *a, **k: pytest.fail("ran a sensitivity pass"))
    ds = image_dataset(n=30, groups=("a", "b", "c"))
    with pytest.raises(FairQuantError, match=r"calibration_size=2 is smaller than the number of groups, 3 \(a, b, c\)"):
        allocation.allocate_bits(tiny_resnet(), ds, "group", calibration_size=2)
    with pytest.raises(FairQuantError, match="batch_size must be a positive integer"):
        allocation.allocate_bits(tiny_resnet(), ds, ["group"], batch_size=0)


def test_group_names_with_a_pipe_do_not_break_markdown_tables():
    model = tiny_resnet()
    ds = image_dataset(n=16, groups=("a|b", "c"))
    table = audit(model, ds, [], "group", n_boot=0, progress=False).to_markdown()
    header = table.splitlines()[0]
    assert "a\\|b" in header
    assert header.replace("\\|", "").count("|") == table.splitlines()[1].count("|")
