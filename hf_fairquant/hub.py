"""Push an output folder (quantized model, model card, audit report, plots) to the Hugging Face Hub;
push the ``group_disparity`` evaluate metric to a Space (:func:`push_metric`).

``create_repo(exist_ok=True)`` then one ``upload_folder`` commit (with hf_xet installed,
huggingface_hub splits a folder into several commits only past 256 files or 100 MB of
non-LFS content, or when a commit of more than 20 files fails). Everything that can be
checked locally (the folder holds what :func:`~hf_fairquant.load_quantized` needs and a
``README.md``, the repo id's shape, a token) is checked before the first request, so a mistake
costs no network round trip. Any failure reported by the Hub becomes a :class:`HubPushError`
whose text never contains the token (a server may echo request headers in its error body) and
which says that the local folder is unchanged and that rerunning the same command retries.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token

from .errors import FairQuantError
from .quantization.backends import artifact_for_folder, available_backends, get_artifact
from .quantization.serialization import META_NAME

try:  # huggingface_hub >= 2 talks HTTP through httpx2, 1.x through httpx
    from httpx2 import HTTPError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import HTTPError

logger = logging.getLogger(__name__)

#: The model card a pushed folder must hold beside the files of its backend's artifact.
CARD_NAME = "README.md"

_BEARER_RE = re.compile(r"(?i)\bBearer\s+[^\s\"',;}]+")
# Failures of the Hub or of the connection to it: HTTP errors (HfHubHTTPError is also an OSError),
# lost connections, hf_xet transfer errors (OSError or RuntimeError), Hub-side validation
# (a ValueError, e.g. README.md metadata rejected) and malformed answers.
_HUB_FAILURES = (HTTPError, OSError, ValueError, RuntimeError)


class HubPushError(FairQuantError, RuntimeError):
    """A push that the Hub (or the connection to it) refused; the local folder is unchanged (a
    user-facing error: the CLI prints it without a traceback)."""


def check_push_arguments(repo_id: str, token: str | None = None) -> str:
    """Validate ``repo_id`` and resolve the token (``token``, else ``HF_TOKEN`` or the stored login).

    Returns the token; raises ``ValueError`` without any network request.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if not isinstance(repo_id, str) or repo_id.count("/") != 1:
            raise HFValidationError("expected 'namespace/name'")
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise FairQuantError(
            f"repo_id {repo_id!r} is not a Hub repo id: expected 'namespace/name' (a user or organization, "
            "a slash, the repo name), each made of letters, digits, '-', '_' and '.', not starting or ending "
            f"with '-' or '.', without '--' or '..', at most 96 characters ({err})"
        ) from None
    token = (token or "").strip() or get_token()
    if not token:
        raise FairQuantError(
            f"no Hugging Face token to push to {repo_id}: pass --token, set HF_TOKEN, or run `hf auth login`"
        )
    return token


def check_folder(folder: str | Path) -> Path:
    """Raise a FairQuantError unless ``folder`` is a directory holding a saved quantized model
    (every file its backend's artifact needs) and a model card."""
    path = Path(folder)
    if not path.exists():
        raise FairQuantError(f"cannot push {path}: it does not exist (give the output folder of a run)")
    if not path.is_dir():
        raise FairQuantError(f"cannot push {path}: it is not a folder (give the output folder of a run)")
    try:
        artifact = _artifact_named(path) or artifact_for_folder(path)
    except FileNotFoundError:
        raise FairQuantError(
            f"cannot push {path}: it holds no quantized model this package wrote (no backend's artifact loads "
            "from it): give a folder written by save_quantized, as `hf-fairquant run` and `FairQuantTrainer.save_model` do"
        ) from None
    required = (*artifact.artifact_files(), CARD_NAME)
    # a large model is saved in shards: model.safetensors.index.json stands for its weights
    missing = [name for name in required if not (path / name).is_file() and not (path / f"{name}.index.json").is_file()]
    if missing:
        raise FairQuantError(
            f"cannot push {path}: it lacks {', '.join(missing)}; a pushed {artifact.publishing.library} folder needs "
            f"{', '.join(required)} (written by save_quantized plus a model card, as `hf-fairquant run` and "
            "`FairQuantTrainer.save_model` do)"
        )
    return path


def _artifact_named(path: Path) -> Any:
    """The artifact format ``hf_fairquant.json`` names (so a missing file is named), or None."""
    if not (path / META_NAME).is_file():
        return None
    try:
        name = json.loads((path / META_NAME).read_text()).get("backend")
    except (ValueError, AttributeError):
        return None
    return get_artifact(name) if name in available_backends() else None


def default_commit_message(folder: str | Path) -> str:
    """Say what the folder holds, e.g. ``hf-fairquant: w4a8 quantized model (4.00 bits), model card,
    audit report, plots``."""
    path = Path(folder)
    model = "quantized model"
    if (path / META_NAME).is_file():
        meta = json.loads((path / META_NAME).read_text())
        name = (meta.get("recipe") or {}).get("name")
        bits = meta.get("effective_bits")
        model = " ".join(
            part for part in (name, "quantized model", f"({bits:.2f} bits)" if isinstance(bits, (int, float)) else None)
            if part
        )
    parts = [model, "model card"]
    if (path / "report.md").is_file() or (path / "results.json").is_file():
        parts.append("audit report")
    if (path / "plots").is_dir():
        parts.append("plots")
    return "hf-fairquant: " + ", ".join(parts)


def redact(text: str, token: str) -> str:
    """``text`` with ``token`` and any ``Bearer …`` credential replaced by ``hf_***``."""
    return _BEARER_RE.sub("Bearer hf_***", text.replace(token, "hf_***"))


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload ``folder`` to the model repo ``repo_id`` in one commit (creating the repo if needed).

    Returns the commit URL. ``revision`` is an existing branch (default ``main``); ``endpoint``
    defaults to ``HF_ENDPOINT``. Raises ``ValueError`` before any request when the folder, the
    repo id or the token is missing or malformed, and :class:`HubPushError` when the Hub fails.
    """
    path = check_folder(folder)
    token = check_push_arguments(repo_id, token)
    message = commit_message or default_commit_message(path)
    api = HfApi(endpoint=endpoint, token=token)
    logger.info("pushing %s to %s on %s: %s", path, repo_id, api.endpoint, message)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=path, revision=revision, commit_message=message)
    except _HUB_FAILURES as err:
        reason = redact(f"{type(err).__name__}: {err}", token)
    else:
        logger.info("pushed %s to %s: %s", path, repo_id, info.commit_url)
        return info.commit_url
    # Raised outside the ``except`` block: the Hub's exception (which may quote request headers)
    # is neither the cause nor the context of this one, so no traceback prints it.
    raise HubPushError(
        f"push of {path} to {repo_id} failed: {reason}\n"
        f"The local folder {path} is unchanged; rerunning the same command retries the push."
    )


# ------------------------------------------------------------------ the group_disparity metric as a Space
#: What evaluate's Hub loader needs and what a community metric Space holds (evaluate-cli's layout):
#: ``<name>.py`` (the script, named as the repo: evaluate.load("ns/name") fetches
#: ``{HF_ENDPOINT}/spaces/ns/name/resolve/main/name.py``), ``README.md`` (the card, whose YAML header
#: configures the Space), ``app.py`` (the Gradio widget) and ``requirements.txt``.
METRIC_SPACE_SDK = "gradio"
_CARD_IMPORT = ">>> from hf_fairquant.metrics import GROUP_DISPARITY  # the path of this folder, shipped with hf_fairquant\n"


def _check_metric_name(repo_id: str) -> str:
    """The repo name, which becomes the script's module name: a '.' would make it a package path."""
    name = repo_id.split("/")[1]
    if "." in name:
        raise FairQuantError(
            f"metric repo {repo_id!r}: the name {name!r} becomes the module file {name}.py that evaluate imports, so it "
            "cannot contain '.'; use letters, digits, '-' and '_' (e.g. 'group_disparity')"
        )
    return name


def metric_space_files(repo_id: str) -> dict[str, bytes]:
    """The files of the metric Space ``repo_id``, made from the module folder shipped with the package.

    The script is uploaded as ``<name>.py``; in the card and ``app.py`` the load-by-path lines
    (``evaluate.load(GROUP_DISPARITY)`` after importing hf_fairquant) become ``evaluate.load("<repo_id>")``,
    so the card's examples run for someone who has only ``evaluate`` installed.
    """
    from .metrics import GROUP_DISPARITY

    name = _check_metric_name(repo_id)
    folder = Path(GROUP_DISPARITY)
    card = (folder / "README.md").read_text(encoding="utf-8")
    app = (folder / "app.py").read_text(encoding="utf-8")
    hub_load = f'evaluate.load("{repo_id}")'
    if _CARD_IMPORT not in card or "evaluate.load(GROUP_DISPARITY)" not in card or \
            'evaluate.load("group_disparity")' not in app:  # pragma: no cover - guards the card's own text
        raise FairQuantError("the metric card or app.py no longer hold the lines push-metric rewrites (a bug)")
    card = card.replace(_CARD_IMPORT, "").replace("evaluate.load(GROUP_DISPARITY)", hub_load)
    return {
        f"{name}.py": (folder / "group_disparity.py").read_bytes(),
        "README.md": card.encode("utf-8"),
        "app.py": app.replace('evaluate.load("group_disparity")', hub_load).encode("utf-8"),
        "requirements.txt": (folder / "requirements.txt").read_bytes(),
    }


def push_metric(
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload the ``group_disparity`` evaluate module to the Space ``repo_id`` (created as a Gradio
    Space if needed) in one commit, so that ``evaluate.load(repo_id)`` works anywhere.

    Returns the commit URL. Raises ``FairQuantError`` before any request for a malformed repo id or
    no token, and :class:`HubPushError` (token redacted) when the Hub fails.
    """
    from huggingface_hub import CommitOperationAdd

    token = check_push_arguments(repo_id, token)
    files = metric_space_files(repo_id)
    message = commit_message or f"hf-fairquant: the group_disparity evaluate metric ({', '.join(files)})"
    api = HfApi(endpoint=endpoint, token=token)
    logger.info("pushing the group_disparity metric to the Space %s on %s", repo_id, api.endpoint)
    try:
        api.create_repo(repo_id, repo_type="space", space_sdk=METRIC_SPACE_SDK, private=private, exist_ok=True)
        info = api.create_commit(
            repo_id, repo_type="space", revision=revision, commit_message=message,
            operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=content) for name, content in files.items()],
        )
    except _HUB_FAILURES as err:
        reason = redact(f"{type(err).__name__}: {err}", token)
    else:
        logger.info("pushed the group_disparity metric to %s: %s", repo_id, info.commit_url)
        return info.commit_url
    raise HubPushError(  # outside the except block: no traceback quotes the Hub's exception
        f"push of the group_disparity metric to the Space {repo_id} failed: {reason}\n"
        "Nothing local changed; rerunning the same command retries the push."
    )
