
import numpy as np
import pytest

from hf_fairquant import GroupSpec, audit
from hf_fairquant.errors import FairQuantError
from hf_fairquant.audit import AuditReport, predict
from tests.conftest import image_dataset, tiny_resnet


class ExampleCounter:
    """Counts the examples each forward sees (hooks survive the audit's deepcopy)."""

    def __init__(self, model):
        self.seen = 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.seen += kwargs["pixel_values"].shape[0]

    def __deepcopy__(self, memo):
        return self


@pytest.fixture(scope="module")
def setup():
    model = tiny_resnet()
    evaluation = image_dataset(n=96, seed=1, groups=("a", "b", "b"))
    calibration = image_dataset(n=40, seed=2)
    return model, evaluation, calibration


def test_each_model_passes_over_the_data_once(setup):
    model, evaluation, calibration = setup
    counter = ExampleCounter(model)
    audit(model, evaluation, ["w8a8", "w4"], "group", calibration, calibration_size=24, batch_size=32, n_boot=0, progress=False)
    # FP + 2 quantized models over the eval set, plus one calibration pass (24 rows) for w8a8 only
    assert counter.seen == 3 * len(evaluation) + 24


def test_a_reference_report_saves_the_second_fp_pass(setup):
    model, evaluation, calibration = setup
    first = audit(model, evaluation, ["w8"], "group", n_boot=0, progress=False)
    assert set(first.settings["timings_s"]) == {"FP", "W8"}
    assert {"quantize_s", "evaluate_s"} <= set(first.settings["timings_s"]["W8"])
    qat_like = audit(model, evaluation, ["w4"], "group", n_boot=0, progress=False)  # any quantized model
    counter = ExampleCounter(model)
    from hf_fairquant import quantize
    import copy

    extra = quantize(copy.deepcopy(model), "w4")
    again = audit(model, evaluation, [], "group", n_boot=0, progress=False, quantized_models={"Q": extra}, reference=first)
    assert counter.seen == len(evaluation)  # only the quantized model's pass
    assert again.fp == first.fp
    assert again.result("Q").metrics["flip_rate"] == qat_like.result("W4").metrics["flip_rate"]
    assert "fp_outputs" not in again.to_dict()
    with pytest.raises(FairQuantError, match="no per-example FP outputs"):
        audit(model, evaluation, ["w8"], "group", n_boot=0, progress=False, reference=AuditReport.from_json(first.to_json()))
    with pytest.raises(FairQuantError, match="covers 96 rows"):
        audit(model, evaluation.select(range(10)), ["w8"], "group", n_boot=0, progress=False, reference=first)


def test_report_matches_the_predictions(setup):
    model, evaluation, calibration = setup
    before = predict(model, evaluation).predictions
    report = audit(model, evaluation, "w8a8,w2a8", GroupSpec("group"), calibration, n_boot=50, progress=False)
    assert np.array_equal(predict(model, evaluation).predictions, before)  # the FP model is untouched
    labels = np.asarray(evaluation["labels"][:])
    groups = np.asarray(evaluation["group"][:])
    fp_acc = {g: float(np.mean(before[groups == g] == labels[groups == g])) for g in ("a", "b")}
    assert report.group_accuracy("FP") == pytest.approx(fp_acc, abs=1e-12)
    assert [r.name for r in report.quantized] == ["W8A8", "W2A8"]
    w2 = report.result("w2a8").metrics
    for g in ("a", "b"):
        assert w2["group_accuracy_drop"][g] == pytest.approx(fp_acc[g] - w2["group_accuracy"][g], abs=1e-12)
    assert w2["gap_change"] == pytest.approx(w2["accuracy_gap"] - report.fp.metrics["accuracy_gap"], abs=1e-12)
    assert report.result("w2a8").effective_bits == 2.0
    assert report.result("w2a8").size_bytes < report.result("w8a8").size_bytes < report.fp.size_bytes
    lo, hi = w2["group_accuracy_ci"]["a"]
    assert lo <= w2["group_accuracy"]["a"] <= hi


def test_report_round_trips_and_renders(setup, tmp_path):
    model, evaluation, calibration = setup
    report = audit(model, evaluation, ["w4"], "group", n_boot=20, progress=False)
    path = report.save(tmp_path / "audit.json")
    again = AuditReport.load(path)
    assert again.to_dict() == report.to_dict()
    assert AuditReport.from_json(report.to_json()).to_dict() == report.to_dict()  # text, however long
    with pytest.raises(FairQuantError, match=r"takes JSON text .*AuditReport.load\(path\)"):
        AuditReport.from_json(str(path))  # a path is never guessed to be text or a file
    table = again.to_markdown()
    assert table.splitlines()[0].startswith("| model | bits | overall | a | b |")
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:4]] == ["FP", "W4"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"recipes": "w3"}, "unsupported weight bits 3"),
        ({"recipes": "fp16"}, "unknown quantization preset 'fp16'"),
        ({"recipes": {"preset": "w4", "overrides": {"decoder.*": "w8"}}}, "matches no Conv2d/Linear"),
        ({"recipes": "w4a8", "calibration_dataset": None}, "pass a calibration_dataset"),
        ({"group_spec": "sex"}, r"group column\(s\) \['sex'\] not found"),
        ({"eval_dataset": image_dataset(n=8).map(lambda r: {"labels": 11})}, r"labels \[11\].*outside the model's classes 0\.\.9"),
        ({"eval_dataset": image_dataset(n=8).select([])}, "is empty"),
    ],
)
def test_bad_input_fails_before_any_forward(setup, change, message):
    model, evaluation, calibration = setup
    counter = ExampleCounter(model)
    kwargs = dict(eval_dataset=evaluation, recipes="w8a8", group_spec="group", calibration_dataset=calibration)
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        audit(model, progress=False, **kwargs)
    assert counter.seen == 0


def test_missing_group_values_fail_early(setup):
    model, evaluation, calibration = setup
    broken = evaluation.map(lambda row, i: {"group": None if i == 5 else row["group"]}, with_indices=True)
    with pytest.raises(ValueError, match="missing .* first at row 5"):
        audit(model, broken, "w8", "group", progress=False)


def test_config_and_keywords_are_one_set_of_options(setup):
    from hf_fairquant.audit import AuditConfig

    model, evaluation, _ = setup
    config = AuditConfig(recipes=["w4"], n_boot=0, batch_size=7)
    by_config = audit(model, evaluation, group_spec="group", config=config, progress=False)
    assert [r.name for r in by_config.quantized] == ["W4"] and by_config.settings["n_boot"] == 0
    # a keyword wins over the config it comes with; positional recipes win over config.recipes
    mixed = audit(model, evaluation, ["w8"], "group", config=config, n_boot=5, progress=False)
    assert [r.name for r in mixed.quantized] == ["W8"] and mixed.settings["n_boot"] == 5
    with pytest.raises(FairQuantError, match=r"unknown option\(s\) \['n_bootstrap'\]; allowed: .*'n_boot'"):
        audit(model, evaluation, ["w4"], "group", n_bootstrap=5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n_boot": -1}, "audit n_boot must be an integer ≥ 0, got -1"),
        ({"confidence_level": 95}, "audit confidence_level must be a number in (0, 1)"),
        ({"calibration_size": "512"}, "audit calibration_size must be an integer ≥ 1, got '512'"),
        ({"batch_size": 0}, "audit batch_size must be an integer ≥ 1, got 0"),
    ],
)
def test_audit_config_checks_every_option(options, message):
    from hf_fairquant.audit import AuditConfig

    with pytest.raises(FairQuantError) as err:
        AuditConfig(**options)
    assert message in str(err.value)


def test_comma_lists_of_recipes_are_split():
    from hf_fairquant.audit import AuditConfig

    assert AuditConfig(recipes=["w8a8,w4", "w2a8"]).recipes == ["w8a8", "w4", "w2a8"]
