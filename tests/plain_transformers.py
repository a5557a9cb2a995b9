"""Run code in a fresh Python process where ``import hf_fairquant`` fails: what a colleague with
plain transformers (+ torchao) sees when they open a published folder or Hub repo."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

_PRELUDE = """
import sys
sys.modules["hf_fairquant"] = None  # any import of hf_fairquant raises ImportError
import torch
torch.set_num_threads(1)
"""


def run_plain(code: str, cwd: Path, args: tuple[str, ...] = (), timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` (after the prelude) in ``cwd``, outside the repository, with this environment
    (so a loopback Hub's HF_ENDPOINT reaches it); returns the finished process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    script = Path(cwd) / "plain_transformers_script.py"
    script.write_text(_PRELUDE + textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
