"""optimum-quanto's C++ extension, built once: at install, under a lock, announced at run time.

optimum-quanto 0.2.7 compiles ``quanto_cpp`` (int2/int4 unpacking) the first time a packed
weight is used: 35-90 s on a CPU, with nothing printed, and processes sharing one venv that
start together each ran the build (about ten times, measured). :func:`ensure_extension` takes
a file lock beside the build folder, builds the extension inside it when it is not built, and
says on stderr when it builds (or waits for another process that holds the lock). ``python -m
hf_fairquant.quantization.warmup`` (the Makefile runs it at install) builds it ahead of time.

Why a built library was still rebuilt (100-190 s per process): quanto's ``ext.lib`` calls
``torch.utils.cpp_extension.load``, whose in-memory version counter starts afresh in every process,
so every process runs the build step, i.e. ``ninja`` in the build folder, and ninja decides. Two
ninjas share this machine's venvs: ``/usr/bin/ninja`` 1.11 (on a plain ``PATH``: the Makefile's
warm-up) and the venv's pip ``ninja`` 1.13 (first on an activated venv's ``PATH``). Each reads the
other's ``.ninja_log`` as a foreign version ("build log version is too old; starting over") and
recompiles everything, so processes with different ``PATH`` s rebuilt in turn; the torch loader also
needs ninja and a compiler on ``PATH`` just to load. So a library that is built (for this torch, newer
than its sources) is imported directly, as the torch loader imports it after its build step
(:func:`load_built`): one build per environment, and no ninja or compiler needed afterwards.
"""

from __future__ import annotations

import os
import sys
import time
from importlib.metadata import version
from typing import Any

EXTENSION = "quanto_cpp"
LOCK_NAME = "hf_fairquant_build.lock"
_done = {"loaded": False}


def _quanto_extension() -> Any:
    from optimum.quanto.library.extensions import get_extension, is_extension_available

    return get_extension(EXTENSION) if is_extension_available(EXTENSION) else None


def library_path(ext: Any) -> str:
    return os.path.join(ext.build_directory, f"{ext.name}.so")


def is_built(ext: Any) -> bool:
    """The compiled library is there, for this torch version (what quanto checks before loading),
    and no source is newer than it (what would make a build step recompile)."""
    library = library_path(ext)
    version_file = os.path.join(ext.build_directory, "pytorch_version.txt")
    if not os.path.isfile(library) or not os.path.isfile(version_file):
        return False
    with open(version_file, encoding="utf-8") as f:
        if f.read().strip() != version("torch"):  # torch.__version__, without importing torch
            return False
    built_at = os.path.getmtime(library)
    return all(os.path.getmtime(src) <= built_at for src in getattr(ext, "sources", []) if os.path.exists(src))


def load_built(ext: Any) -> Any:
    """Import the built library as a Python module, as torch's ``cpp_extension.load`` does after
    its build step, without running that step (see the module doc)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(ext.name, library_path(ext))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {library_path(ext)}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_extension(ext: Any = None, announce: bool = True) -> bool:
    """Build or load ``ext`` (default: optimum-quanto's ``quanto_cpp``) under a file lock; once per
    process. A built library is imported directly (:func:`load_built`), never rebuilt; a missing,
    stale or unloadable one is built through quanto (``ext.lib``). Returns whether this call built
    it. Prints to stderr when it builds or waits."""
    from filelock import FileLock, Timeout

    default = ext is None
    if default:
        if _done["loaded"]:
            return False
        ext = _quanto_extension()
        if ext is None:
            return False
    if getattr(ext, "_lib", None) is not None:
        return False
    lock = FileLock(os.path.join(os.path.dirname(os.path.abspath(ext.build_directory)), LOCK_NAME))
    try:
        lock.acquire(timeout=1)  # a process that only loads holds it for milliseconds: no message
    except Timeout:
        if announce:
            print(f"hf_fairquant: waiting for another process that builds or loads optimum-quanto's {ext.name} "
                  f"extension (lock {lock.lock_file})", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        if is_built(ext):
            try:
                ext._lib = load_built(ext)
            except (ImportError, OSError):  # a damaged library: build it again
                os.remove(library_path(ext))
        built = getattr(ext, "_lib", None) is None
        if built:
            if announce:
                print(f"hf_fairquant: building optimum-quanto's {ext.name} extension once (35-90 s on a CPU; "
                      "`python -m hf_fairquant.quantization.warmup` does it at install)...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            ext.lib  # noqa: B018 - quanto's property builds the library (torch's loader)
            if announce:
                print(f"hf_fairquant: built {ext.name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    finally:
        lock.release()
    _done["loaded"] = _done["loaded"] or default
    return built


def warm_up() -> float:
    """Build the extension (under the lock), then one int2/int4/int8 forward; returns seconds."""
    import torch

    from .api import apply_plan, freeze
    from .recipe import LayerQuant

    start = time.perf_counter()
    ensure_extension()
    for bits in (2, 4, 8):
        model = torch.nn.Sequential(torch.nn.Linear(128, 128))
        apply_plan(model, {"0": LayerQuant(bits)})
        freeze(model)
        with torch.no_grad():
            model(torch.randn(4, 128))
    return time.perf_counter() - start


if __name__ == "__main__":
    print(f"optimum-quanto warm-up done in {warm_up():.1f}s")
