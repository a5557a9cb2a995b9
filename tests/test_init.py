"""The top-level package: lazy names that load nothing heavy, and exports that submodules don't shadow."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_import_loads_no_ml_library():
    loaded = _run(
        "import sys, hf_fairquant, hf_fairquant.cli; hf_fairquant.cli.build_parser(['--help']); "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'optimum.quanto', 'torchao') if m in sys.modules))"
    )
    assert loaded == "[]"


def test_an_export_wins_over_its_submodule():
    out = _run(
        "import hf_fairquant.run\n"  # imports the submodule hf_fairquant.audit first
        "from hf_fairquant import audit, explain, quantize\n"
        "import hf_fairquant\n"
        "print(callable(audit), audit.__module__, hf_fairquant.audit is audit, callable(explain), callable(quantize))"
    )
    assert out == "True hf_fairquant.audit True True True"


def test_every_export_resolves():
    import hf_fairquant

    for name in hf_fairquant.__all__:
        assert getattr(hf_fairquant, name) is not None, name
    assert set(hf_fairquant.__all__) <= set(dir(hf_fairquant))
