"""optimum-quanto's C++ extension, built once: at install, under a lock, announced at run time.

optimum-quanto 0.2.7 compiles ``quanto_cpp`` (int2/int4 unpacking) the first time a packed
weight is used: 35-90 s on a CPU, with nothing printed, and processes sharing one venv that
start together each ran the build (about ten times, measured). :func:`ensure_extension` takes
a file lock beside the build folder, builds or loads the extension inside it, and says on
stderr when it builds (or waits for another process that does). ``python -m
hf_fairquant.quantization.warmup`` (the Makefile runs it at install) builds it ahead of time.
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


def is_built(ext: Any) -> bool:
    """The compiled library is there, for this torch version (what quanto checks before loading)."""
    version_file = os.path.join(ext.build_directory, "pytorch_version.txt")
    if not os.path.isfile(os.path.join(ext.build_directory, f"{ext.name}.so")) or not os.path.isfile(version_file):
        return False
    with open(version_file, encoding="utf-8") as f:
        return f.read().strip() == version("torch")  # torch.__version__, without importing torch


def ensure_extension(ext: Any = None, announce: bool = True) -> bool:
    """Build or load ``ext`` (default: optimum-quanto's ``quanto_cpp``) under a file lock; once per
    process. Returns whether this call built it. Prints to stderr when it builds or waits."""
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
        lock.acquire(timeout=0)
    except Timeout:
        if announce:
            print(f"hf_fairquant: waiting for another process that builds optimum-quanto's {ext.name} "
                  f"extension (lock {lock.lock_file})", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        built = not is_built(ext)
        if built and announce:
            print(f"hf_fairquant: building optimum-quanto's {ext.name} extension once (35-90 s on a CPU; "
                  "`python -m hf_fairquant.quantization.warmup` does it at install)...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        ext.lib  # noqa: B018 - quanto's property builds (or loads) the library
        if built and announce:
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
