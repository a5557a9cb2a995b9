"""quanto's extension: built once under a file lock, announced; concurrent processes never rebuild it."""

import subprocess
import sys
import textwrap
from pathlib import Path

from hf_fairquant.quantization.warmup import LOCK_NAME, ensure_extension, is_built

ROOT = Path(__file__).resolve().parents[2]

# A stand-in for quanto's Extension: `.lib` "builds" (0.5 s, logged) unless the library is there.
STUB = textwrap.dedent('''
    import os, sys, time
    from importlib.metadata import version
    sys.path.insert(0, sys.argv[2])
    import importlib.util  # the module alone: no torch, no package import (fast processes)
    spec = importlib.util.spec_from_file_location("warmup", sys.argv[2] + "/hf_fairquant/quantization/warmup.py")
    warmup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(warmup)
    ensure_extension = warmup.ensure_extension

    class Stub:
        name = "stub_ext"
        build_directory = sys.argv[1]
        _lib = None

        @property
        def lib(self):
            so = os.path.join(self.build_directory, "stub_ext.so")
            if not os.path.exists(so):
                with open(os.path.join(self.build_directory, "log"), "a") as log:
                    log.write(f"build {time.time()}\\n")
                time.sleep(0.5)
                open(so, "w").close()
                with open(os.path.join(self.build_directory, "pytorch_version.txt"), "w") as f:
                    f.write(version("torch"))
            self._lib = object()
            return self._lib

    print("built" if ensure_extension(Stub()) else "loaded")
''')


def test_concurrent_processes_build_once_and_announce_it(tmp_path):
    build = tmp_path / "ext" / "build"
    build.mkdir(parents=True)
    script = tmp_path / "stub.py"
    script.write_text(STUB)
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, str(script), str(build), str(ROOT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sorted(out.strip() for out, _ in outputs) == ["built", "loaded", "loaded"]
    assert (build / "log").read_text().count("build") == 1  # one build, whatever the order
    builder_err = next(err for out, err in outputs if out.strip() == "built")
    assert "building optimum-quanto's stub_ext extension once" in builder_err and "built stub_ext in" in builder_err
    assert (tmp_path / "ext" / LOCK_NAME).exists()


def test_the_installed_extension_is_built_and_loads_silently(capsys):
    from optimum.quanto.library.extensions import get_extension

    ext = get_extension("quanto_cpp")
    assert is_built(ext)  # the install-time warm-up (make) built it
    assert ensure_extension() is False
    assert "building" not in capsys.readouterr().err
