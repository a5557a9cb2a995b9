"""The wheel ships the whole evaluate module folder: evaluate.load(GROUP_DISPARITY) works from an install.

Builds the wheel from a copy of the sources (nothing is written into the checkout), installs it with
--no-deps into a fresh venv, and points that venv at this interpreter's site-packages through a .pth
file, so evaluate and its dependencies come from here and nothing is downloaded. A plain path in a .pth
does not run the .pth files of that directory (editable-install finders), so ``hf_fairquant`` resolves to
the wheel; the subprocess asserts it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_FILES = ["group_disparity.py", "README.md", "app.py", "requirements.txt"]

pytestmark = pytest.mark.wheel


def run(*cmd, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    readme = REPO / "README.md"
    if readme.exists():
        shutil.copy(readme, src)
    else:  # pyproject names it; the package's own README may not be written yet
        (src / "README.md").write_text("# hf-fairquant\n")
    shutil.copytree(REPO / "hf_fairquant", src / "hf_fairquant", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    if importlib.util.find_spec("build") is not None:
        # No isolation and no dependency check: offline, with the setuptools already installed here.
        run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check",
            "--outdir", str(dist), str(src))
    else:
        run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
            "-w", str(dist), str(src))
    (wheel,) = dist.glob("hf_fairquant-*.whl")
    return wheel


def make_venv(tmp_path: Path, wheel: Path) -> tuple[Path, Path]:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel))
    site = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    here = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_host_site_packages.pth").write_text("\n".join(here) + "\n")
    return venv, python


def test_wheel_contains_the_module_folder(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in MODULE_FILES:
        assert f"hf_fairquant/metrics/group_disparity/{name}" in names
    assert "hf_fairquant/metrics/_trainer.py" in names

    venv, python = make_venv(tmp_path, wheel)
    script = textwrap.dedent(
        """
        import json, os, sys
        import evaluate
        import hf_fairquant.metrics as metrics

        venv = os.path.realpath(sys.argv[1])
        assert os.path.realpath(metrics.__file__).startswith(venv + os.sep), metrics.__file__
        assert os.path.realpath(metrics.GROUP_DISPARITY).startswith(venv + os.sep), metrics.GROUP_DISPARITY
        module = evaluate.load(metrics.GROUP_DISPARITY)
        result = module.compute(
            predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], groups=["a", "a", "b", "b"],
            reference_predictions=[0, 1, 0, 0], n_boot=20,
        )
        print(json.dumps({"file": metrics.__file__, "result": result}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    output = run(str(python), "-c", script, str(venv), cwd=tmp_path, env=env).stdout
    payload = json.loads(output.strip().splitlines()[-1])
    assert payload["result"]["group_accuracy"] == {"a": 1.0, "b": 0.5}
    assert payload["result"]["group_accuracy_drop"] == {"a": 0.0, "b": 0.5}
    assert "accuracy_gap_ci" in payload["result"]
    # evaluate copied the module from the installed package into the fresh modules cache.
    assert list((tmp_path / "hf_home").rglob("group_disparity.py"))
