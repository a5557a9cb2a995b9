"""Audit and explain sharded over two CPU processes (gloo) under ``accelerate launch -m
hf_fairquant.cli``: each rank evaluates its share of the batches, the outputs are gathered in
example order, and the results equal one process's exactly (same bootstrap draws, same numbers);
only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_fairquant._distributed import gather_in_order, my_share, world
from hf_fairquant.cli import main
from tests.conftest import tiny_vit
from tests.training.test_multiprocess import ACCELERATE_FLAGS, _free_port

ROOT = Path(__file__).resolve().parents[1]
DATA = ["--dataset", "digits", "--long-tail-classes", "3,8", "--long-tail-fraction", "0.1"]
AUDIT = ["--recipes", "w8a8,w4", "--n-boot", "200", "--batch-size", "64"]  # 450 test rows: 8 batches
EXPLAIN = ["--recipe", "w4a8", "--examples-per-group", "16", "--probes", "2", "--hvp-budget", "8",
           "--chunk-size", "4", "--batch-size", "64", "--calibration-size", "64"]  # 4 micro-batches per group


def _launch(tmp: Path, argv: list[str]) -> subprocess.CompletedProcess:
    accelerate = str(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp / "hf_home"),
           "CUDA_VISIBLE_DEVICES": ""}  # gloo CPU ranks even where a GPU is (one GPU cannot hold two NCCL ranks)
    cmd = [accelerate, "launch", *ACCELERATE_FLAGS, "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(_free_port()), "-m", "hf_fairquant.cli", *argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sharded") / "fp_model"
    tiny_vit().save_pretrained(folder)
    return folder


def test_one_process_shares_are_everything():
    assert world() == (0, 1)
    assert my_share(5) == [0, 1, 2, 3, 4]
    assert gather_in_order({1: "b", 0: "a"}, 2) == ["a", "b"]


@pytest.mark.slow
def test_two_process_audit_equals_one_process_audit_exactly(model_folder, tmp_path):
    args = ["audit", "--model", str(model_folder), *DATA, *AUDIT]
    assert main([*args, "--output-dir", str(tmp_path / "one")]) == 0
    proc = _launch(tmp_path, [*args, "--output-dir", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("outputs in ") == 1  # rank 0 alone prints and writes
    one, two = (json.loads((tmp_path / name / "results.json").read_text())["audit"] for name in ("one", "two"))
    for report in (one, two):
        report["settings"].pop("timings_s")  # wall-clock seconds, per process
    assert two == one  # every accuracy, interval, flip rate and p-value, to the last digit
    assert one["settings"]["n_boot"] == 200 and one["fp"]["metrics"]["group_accuracy_ci"]
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in {"one", "two", "hf_home"})
    assert leftovers == [], leftovers  # no scratch or lock of rank 1 beside the outputs


@pytest.mark.slow
def test_two_process_explain_equals_one_process_explain_exactly(model_folder, tmp_path):
    args = ["explain", "--model", str(model_folder), *DATA, *EXPLAIN]
    assert main([*args, "--output-dir", str(tmp_path / "one")]) == 0
    proc = _launch(tmp_path, [*args, "--output-dir", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "explain.json").read_text()) for name in ("one", "two"))
    for explanation in (one, two):
        for key in ("timings_s", "wall_time_s", "total_wall_time_s"):
            explanation["settings"].pop(key)
    assert two == one  # drift, logits, gradients, noise floors, λ_max, traces and the bound, bit for bit
