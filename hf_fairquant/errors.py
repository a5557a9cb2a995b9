"""The one error type users see: :class:`FairQuantError` (a ``ValueError``, so ``except
ValueError`` keeps working). It is raised for bad input — an option, file, column or value that
is wrong — and its message names what is wrong and what is allowed. Anything else that escapes
is a bug and shows its traceback (the CLI maps only these to exit code 2)."""

from __future__ import annotations


class FairQuantError(ValueError):
    """Bad input to hf_fairquant, raised before heavy work; the message says what is allowed."""


class MissingFileError(FairQuantError, FileNotFoundError):
    """A file or folder the user named does not exist (also a ``FileNotFoundError``)."""


class UnsupportedByBackendError(FairQuantError):
    """A recipe asks a quantization backend for something it cannot do (names the modules and
    the backend that can)."""


class ArtifactError(FairQuantError):
    """A saved model folder is incomplete, edited or inconsistent (names the file)."""


__all__ = ["ArtifactError", "FairQuantError", "MissingFileError", "UnsupportedByBackendError"]
