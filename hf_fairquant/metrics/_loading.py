"""Load the ``group_disparity`` evaluate module once per process; say how users load it."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FairQuantError

if TYPE_CHECKING:
    import evaluate

#: Path of the self-contained ``evaluate`` module; use ``evaluate.load(GROUP_DISPARITY)``.
GROUP_DISPARITY: str = str(Path(__file__).parent / "group_disparity")


@functools.lru_cache(maxsize=1)
def load_group_disparity() -> "evaluate.EvaluationModule":
    """The loaded module, cached; in memory so concurrent evaluations share no cache file."""
    import evaluate

    return evaluate.load(GROUP_DISPARITY, keep_in_memory=True)


#: Environment variable holding the Hub Space the metric was pushed to (``hf-fairquant push-metric``),
#: e.g. ``HF_FAIRQUANT_METRIC_REPO=me/group_disparity``: cards and READMEs then show the Hub form.
METRIC_REPO_ENV = "HF_FAIRQUANT_METRIC_REPO"
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_-]*")


def metric_repo(repo: str | None = None) -> str | None:
    """The configured metric Space: ``repo`` if given, else ``$HF_FAIRQUANT_METRIC_REPO``; None when neither
    is set (or both are empty). A value that is not ``namespace/name`` is an error that names its source."""
    source = "metric repo" if repo is not None else METRIC_REPO_ENV
    value = (repo if repo is not None else os.environ.get(METRIC_REPO_ENV, "")).strip()
    if not value:
        return None
    if not _REPO_ID.fullmatch(value):
        raise FairQuantError(
            f"{source} {value!r} is not the id of a metric Space: expected 'namespace/name' (letters, digits, '-', "
            "'_'; no '.' in the name), as pushed by `hf-fairquant push-metric namespace/name`"
        )
    return value


def metric_load_snippet(repo: str | None = None) -> str:
    """Python lines that load the metric, for cards and READMEs: the Hub form
    (``evaluate.load("ns/name")``) once a metric Space is configured (``repo`` or
    ``$HF_FAIRQUANT_METRIC_REPO``), else the path form through hf_fairquant."""
    hub_repo = metric_repo(repo)
    if hub_repo is not None:
        return f'import evaluate\n\ngroup_disparity = evaluate.load("{hub_repo}")'
    return (
        "import evaluate\nfrom hf_fairquant.metrics import GROUP_DISPARITY\n\n"
        "group_disparity = evaluate.load(GROUP_DISPARITY)"
    )
