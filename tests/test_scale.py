"""benchmarks/scale.py: ``--device cuda`` fails at once and clearly without CUDA; the GPU
script refuses to run without a CUDA torch."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _scale():
    spec = importlib.util.spec_from_file_location("scale", ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_device_cuda_fails_clearly_without_cuda():
    with pytest.raises(SystemExit, match=r"--device cuda: torch.cuda.is_available\(\) is False"):
        _scale().main(["--device", "cuda", "--models", "vit-b16"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_check_script_stops_without_cuda(tmp_path):
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "OUT": str(tmp_path / "out")},
    )
    assert done.returncode == 2
    assert "no torch with a usable CUDA device" in done.stderr


def test_the_table_states_the_configuration():
    scale = _scale()
    rows = [dict(scale.row("audit", 3.0, 1.5, 100.0, goal="g", note="n"), model="vit-b16", pass_s=1.5)]
    args = type("A", (), dict(examples=32, image_size=64, seq_len=128, batch_size=16, device="cpu"))()
    text = scale.table(rows, args, 8)
    assert "| vit-b16 | audit | 2.00 | — | — | 100 | g | n |" in text
    assert "Configuration: 32 examples, images 64², DistilBERT seq 128, batch 16, calibration 8" in text
