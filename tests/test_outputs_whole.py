"""Issue 14, item 2: outputs appear whole or not at all, and a failed run never blocks its rerun."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import hf_fairquant.run.models as pipeline
from hf_fairquant._atomic import atomic_directory, scratch_directory, sweep_stale
from hf_fairquant.cli import main
from hf_fairquant.run import load_recipe, run
from tests.fail_early_fixtures import save_data, tiny_recipe, write_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def data(tmp_path):
    return save_data(tmp_path / "data", ["a", "b"], ["a", "b"])


def test_checkpoints_never_enter_the_output_and_a_failed_run_does_not_block_its_rerun(tmp_path, data, monkeypatch):
    training = {"save_strategy": "steps", "save_steps": 1}  # the trainer writes checkpoint-1, checkpoint-2
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(data, training=training))
    out = tmp_path / "runs" / "out"
    import importlib

    audit_module = importlib.import_module("hf_fairquant.audit")  # the module, not the audit() export

    real_audit = audit_module.audit
    seen = {}

    def failing_audit(*args, **kwargs):
        scratch = [p for p in out.parent.iterdir() if p.name.startswith(".out.tmp-")]
        seen["checkpoints"] = sorted(q.name for p in scratch for q in (p / "checkpoints").iterdir())
        raise RuntimeError("killed during the audit")

    monkeypatch.setattr(audit_module, "audit", failing_audit)
    with pytest.raises(RuntimeError, match="killed during the audit"):
        run(load_recipe(path, output_dir=str(out)), echo=lambda *_: None)
    assert seen["checkpoints"] == ["checkpoint-1", "checkpoint-2"]  # they lived beside the output
    assert not out.exists() and _leftovers(out.parent) == []  # and went away with the failure
    monkeypatch.setattr(audit_module, "audit", real_audit)
    recipe = load_recipe(path, output_dir=str(out))
    run(recipe, echo=lambda *_: None)  # the same command again: not refused
    assert (out / "results.json").is_file() and not (out / "checkpoints").exists()
    assert _leftovers(out.parent) == []
    assert recipe.training.output_dir == str(out / "checkpoints")  # the caller's recipe is unchanged


def test_checkpoints_in_a_folder_named_outside_the_output_are_kept(tmp_path, data):
    keep = tmp_path / "keep"
    training = {"save_strategy": "steps", "save_steps": 2, "output_dir": str(keep)}
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(data, training=training))
    run(load_recipe(path, output_dir=str(tmp_path / "out")), echo=lambda *_: None)
    assert (keep / "checkpoint-2").is_dir() and not (tmp_path / "out" / "checkpoints").exists()


def test_output_dir_containing_the_working_folder_is_refused_before_any_work(tmp_path, data, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "load_raw_grouped_dataset", lambda *a, **k: pytest.fail("loaded data"))
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(data))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for where in (".", "..", str(work)):
        assert main(["run", str(path), "--output-dir", where, "--overwrite"]) == 2
        assert "is the working folder or contains it" in capsys.readouterr().err


def test_a_stale_temporary_of_a_dead_process_is_removed_and_a_live_one_kept(tmp_path):
    target = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.tmp-{int(dead.stdout)}-abc"
    (stale / "plots").mkdir(parents=True)
    legacy = tmp_path / ".out.tmp-k3j2x"  # written by an older version (no pid)
    legacy.mkdir()
    live = tmp_path / f".out.tmp-{os.getppid()}-xyz"  # the pytest runner's parent: alive
    live.mkdir()
    with pytest.warns(RuntimeWarning, match="left by an earlier interrupted run"):
        with atomic_directory(target) as tmp:
            (tmp / "f").write_text("x")
    assert not stale.exists() and not legacy.exists() and live.exists()
    assert sorted(p.name for p in target.iterdir()) == ["f"]


def test_an_interrupted_swap_is_undone_by_the_next_write(tmp_path):
    target = tmp_path / "out"
    old = tmp_path / ".out.old-999999999-abc"  # the previous folder, moved aside; then the process died
    old.mkdir()
    (old / "results.json").write_text("{}")
    with pytest.warns(RuntimeWarning, match="restored"):
        sweep_stale(target)
    assert (target / "results.json").read_text() == "{}"


@pytest.mark.parametrize("block", ["atomic_directory", "scratch_directory"])
def test_sigterm_removes_the_temporaries(tmp_path, block):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        from hf_fairquant._atomic import {block}
        with {block}({str(tmp_path / 'out')!r}) as tmp:
            (tmp / "half.bin").write_bytes(b"x" * 1000)
            print(tmp, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert proc.stdout.strip() and not os.path.exists(proc.stdout.strip())
    assert list(tmp_path.iterdir()) == []


def test_scratch_directory_is_removed_on_success_and_failure(tmp_path):
    with scratch_directory(tmp_path / "out") as scratch:
        (scratch / "checkpoint-1").mkdir()
    assert not scratch.exists()
    with pytest.raises(ValueError):
        with scratch_directory(tmp_path / "out") as scratch:
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_the_docs_errors_example_prints_what_the_docs_show(monkeypatch, capsys):
    import re
    import shlex

    section = open(os.path.join(ROOT, "docs", "errors.md"), encoding="utf-8").read()
    command, shown = re.search(r"\$ (hf-fairquant [^\n]+)\n\s*(hf-fairquant [^\n]+)", section).groups()
    monkeypatch.chdir(ROOT)
    assert main(shlex.split(command)[1:]) == 2
    assert capsys.readouterr().err.strip() == shown.strip()
