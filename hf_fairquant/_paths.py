"""One rule for "a local folder or a Hub repo id?", used wherever a user names a model."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import MissingFileError


def local_folder_or_hub_id(name: str | Path, what: str = "model") -> Path | str:
    """An existing local path as a ``Path``; otherwise ``name`` as a Hub repo id.

    A name that can only be a local path (it starts with ``.``, ``/`` or ``~``, or has more than
    one ``/``) but does not exist is a :class:`~hf_fairquant.errors.MissingFileError`, never a Hub
    request. ``"user/Model-2.5"`` is a Hub id.
    """
    text = str(name)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if isinstance(name, Path) or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise MissingFileError(f"{what} path {text} does not exist (give a local folder or a Hub id like user/model)")
    return text


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def hub_id(value: str | None) -> str | None:
    """``value`` if it can be a Hub repo id (``name`` or ``namespace/name``), else None: a local
    path (absolute, relative, ``~``, or an existing file/folder) never goes into card metadata."""
    if not value or not isinstance(value, str):
        return None
    if value.startswith((".", "/", "~", "\\")) or ":" in value or value.count("/") > 1 or Path(value).exists():
        return None
    return value if _HUB_ID.fullmatch(value) else None
