"""Issue 14, item 1: a group in the training split but not in the test split loses nothing."""

import json

from hf_fairquant.audit import AuditReport, audit
from hf_fairquant.run import load_recipe, run
from hf_fairquant.summary import model_rows, summary_table
from tests.conftest import image_dataset, tiny_resnet
from tests.fail_early_fixtures import save_data, tiny_recipe, write_recipe


def test_audit_report_renders_a_group_absent_from_the_test_split():
    model = tiny_resnet(num_labels=10)
    calibration = image_dataset(n=24, groups=("a", "b", "rare"))
    evaluation = image_dataset(n=16, seed=1, groups=("a", "b"))
    report = audit(model, evaluation, ["w8a8"], "group", calibration, calibration_size=8, n_boot=0, progress=False)
    assert report.group_names == ["a", "b", "rare"]
    table = report.to_markdown()
    assert "n/a" in table and "rare 0" in table and "no test examples of group(s) rare" in table
    again = AuditReport.from_dict(report.to_dict())
    assert again.to_markdown() == table


def test_run_with_a_training_only_group_writes_every_output(tmp_path):
    data = save_data(tmp_path / "data", ["a", "b", "rare"], ["a", "b"])
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_recipe(data)), output_dir=str(tmp_path / "out"))
    result = run(recipe, echo=lambda *_: None)
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["group_counts"]["test"]["rare"] == 0
    assert all(row["groups"]["rare"] is None for row in model_rows(result.audit))
    assert "n/a" in summary_table(result.audit) and "n/a" in (out / "report.md").read_text()
    assert (out / "plots" / "group_accuracy.png").is_file()
    assert result.audit.group_names == ["a", "b", "rare"]
