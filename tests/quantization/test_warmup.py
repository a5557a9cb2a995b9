"""quanto's extension: built once under a file lock, announced; concurrent processes never rebuild it."""

import os
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

from hf_fairquant.quantization.warmup import LOCK_NAME, ensure_extension, is_built

ROOT = Path(__file__).resolve().parents[2]

# A stand-in for quanto's Extension: `.lib` runs torch's loader, which runs its build step (ninja,
# logged) in every process, and "builds" (0.5 s, logged) unless the library is there. The library
# itself is a stand-in too: importing it is `load_built`, replaced here by a marker.
STUB = textwrap.dedent('''
    import os, sys, time
    from importlib.metadata import version
    sys.path.insert(0, sys.argv[2])
    import importlib.util  # the module alone: no torch, no package import (fast processes)
    spec = importlib.util.spec_from_file_location("warmup", sys.argv[2] + "/hf_fairquant/quantization/warmup.py")
    warmup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(warmup)
    ensure_extension = warmup.ensure_extension
    warmup.load_built = lambda ext: "imported"

    class Stub:
        name = "stub_ext"
        build_directory = sys.argv[1]
        _lib = None

        @property
        def lib(self):
            so = os.path.join(self.build_directory, "stub_ext.so")
            with open(os.path.join(self.build_directory, "log"), "a") as log:
                log.write(f"ninja {time.time()}\\n")  # torch's loader: its build step runs in every process
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


def _three_processes(script, build):
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, str(script), str(build), str(ROOT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    return outputs


def test_concurrent_processes_build_once_and_announce_it(tmp_path):
    build = tmp_path / "ext" / "build"
    build.mkdir(parents=True)
    script = tmp_path / "stub.py"
    script.write_text(STUB)
    outputs = _three_processes(script, build)
    assert sorted(out.strip() for out, _ in outputs) == ["built", "loaded", "loaded"]
    log = (build / "log").read_text()
    assert log.count("build") == 1  # one build, whatever the order
    assert log.count("ninja") == 1  # the two that came later imported the library: no build step
    builder_err = next(err for out, err in outputs if out.strip() == "built")
    assert "building optimum-quanto's stub_ext extension once" in builder_err and "built stub_ext in" in builder_err
    assert (tmp_path / "ext" / LOCK_NAME).exists()


def test_processes_started_after_the_build_never_run_the_build_step(tmp_path):
    """Issue 26, item 16: after the warm-up, torch's loader still ran ninja in every process, and
    ninja rebuilt (100-190 s) whenever another ninja had written the build log."""
    build = tmp_path / "ext" / "build"
    build.mkdir(parents=True)
    script = tmp_path / "stub.py"
    script.write_text(STUB)
    _three_processes(script, build)  # the warm-up
    before = (build / "log").read_text()
    outputs = _three_processes(script, build)
    assert [out.strip() for out, _ in outputs] == ["loaded"] * 3
    assert (build / "log").read_text() == before  # no build step at all, let alone a build
    assert not any("building" in err for _, err in outputs)


def test_a_source_newer_than_the_library_is_built_again(tmp_path):
    from types import SimpleNamespace

    build = tmp_path / "build"
    build.mkdir()
    (build / "x_ext.so").write_text("")
    (build / "pytorch_version.txt").write_text(version("torch"))
    source = tmp_path / "x.cpp"
    source.write_text("")
    ext = SimpleNamespace(name="x_ext", build_directory=str(build), sources=[str(source)])
    os.utime(source, (0, 0))
    assert is_built(ext)
    os.utime(source, None)
    os.utime(build / "x_ext.so", (0, 0))
    assert not is_built(ext)  # edited after the build: the build step must run
    (build / "pytorch_version.txt").write_text("0.0")
    os.utime(build / "x_ext.so", None)
    assert not is_built(ext)  # built for another torch


def test_the_installed_extension_loads_without_ninja_or_a_compiler():
    """What a process after the warm-up needs: the built library, not torch's build step (which
    needs ninja and a compiler on PATH, and may rebuild)."""
    from optimum.quanto.library.extensions import get_extension

    if not is_built(get_extension("quanto_cpp")):
        pytest.skip("the install-time warm-up has not built quanto_cpp in this environment")
    code = textwrap.dedent('''
        import torch
        from hf_fairquant.quantization.warmup import ensure_extension
        from optimum.quanto.library.extensions import get_extension
        assert ensure_extension() is False
        packed = torch.tensor([[0x1B]], dtype=torch.uint8)
        print(get_extension("quanto_cpp").lib.unpack(packed, 2).tolist())
    ''')
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/nonexistent", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]  # was: "Ninja is required to load C++ extensions"
    assert proc.stdout.strip() == "[[3], [2], [1], [0]]"  # 0x1B = 0b00011011, 2-bit fields low to high
    assert "building" not in proc.stderr


def test_the_installed_extension_is_built_and_loads_silently(capsys):
    from optimum.quanto.library.extensions import get_extension

    ext = get_extension("quanto_cpp")
    assert is_built(ext)  # the install-time warm-up (make) built it
    assert ensure_extension() is False
    assert "building" not in capsys.readouterr().err
