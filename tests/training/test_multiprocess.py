"""A 2-process CPU run (torchrun, and the README's `accelerate launch` command; gloo): one global
sampled stream sharded across ranks."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_fairquant import load_quantized
from hf_fairquant.training import GroupBalancedSampler, sampling_weights
from tests.training.ddp_worker import BATCH, ROWS, STEPS

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: accelerate 1.15 starts ONE process for `--num_processes 2 --cpu` (its simple launcher); with
#: `--multi_gpu` it hands over to torch.distributed.run, which on a machine without GPUs runs
#: MULTI_CPU ranks over gloo. The README shows this command.
ACCELERATE_FLAGS = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                    "--dynamo_backend", "no"]


def _launcher(name: str, port: int) -> list[str]:
    if name == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(port)]
    accelerate = str(Path(sys.executable).parent / "accelerate")
    return [accelerate, "launch", *ACCELERATE_FLAGS, "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]


@pytest.fixture(scope="module", params=["torchrun", "accelerate"])
def run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "HF_HOME": str(out / "hf_home")}  # no stray accelerate default_config.yaml
    cmd = [*_launcher(request.param, _free_port()), str(ROOT / "tests" / "training" / "ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]  # two processes really ran
    return out, ranks


def test_ranks_share_one_stream_without_overlap(run):
    _, ranks = run
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all(len(r["seen"]) == STEPS and all(len(b) == BATCH for b in r["seen"]) for r in ranks)
    # the stream every rank's sampler draws (same seed, epoch 0), cut into global steps
    groups = np.array([1 if i % 10 == 9 else 0 for i in range(ROWS)])
    stream = list(GroupBalancedSampler(sampling_weights(groups, 1.0), ROWS, seed=0))
    for step in range(STEPS):
        global_batch = stream[2 * BATCH * step : 2 * BATCH * (step + 1)]
        assert ranks[0]["seen"][step] == global_batch[:BATCH]
        assert ranks[1]["seen"][step] == global_batch[BATCH:]


def test_group_proportions_over_the_union_of_ranks(run):
    _, ranks = run
    rows = [i for r in ranks for batch in r["seen"] for i in batch]
    share_rare = np.mean([i % 10 == 9 for i in rows])
    n = len(rows)  # 96 draws; target 0.5 for the rare group (10 % of rows)
    assert abs(share_rare - 0.5) < 4 * np.sqrt(0.25 / n)  # stated tolerance: 4 binomial sigmas


def test_dro_weights_agree_across_ranks_and_the_model_is_saved_once(run):
    out, ranks = run
    assert ranks[0]["q"] == ranks[1]["q"]
    assert ranks[0]["q"] != [0.5, 0.5]
    saved = [p for p in (out / "final").iterdir() if p.suffix == ".safetensors"]
    assert len(saved) == 1
    assert load_quantized(out / "final") is not None
