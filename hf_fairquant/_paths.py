"""One rule for "a local folder or a Hub repo id?", used wherever a user names a model."""

from __future__ import annotations

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
