"""push_metric / `hf-fairquant push-metric`: the group_disparity metric as a Hub Space, loaded back
with ``evaluate.load("<user>/<name>")`` from the loopback Hub (tests/hub_server.py, Space repos)."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import yaml

from hf_fairquant.cli import main
from hf_fairquant.errors import FairQuantError
from hf_fairquant.hub import HubPushError, metric_space_files, push_metric
from hf_fairquant.metrics import (
    GROUP_DISPARITY,
    METRIC_REPO_ENV,
    metric_load_snippet,
    metric_repo,
)
from tests import hub_fixtures
from tests.hub_fixtures import TOKEN, point_huggingface_hub_at

hub = hub_fixtures.hub  # the loopback-Hub fixture, for this module's tests

SPACE = "me/group_disparity"
SPACE_FILES = {".gitattributes", "group_disparity.py", "README.md", "app.py", "requirements.txt"}


def fixed_case() -> dict:
    """Every optional output on: reference, losses, intervals (groups of 40 and 60)."""
    rng = np.random.default_rng(0)
    n = 100
    references = rng.integers(0, 3, n)
    return {
        "predictions": np.where(rng.random(n) < 0.75, references, (references + 1) % 3).tolist(),
        "references": references.tolist(),
        "groups": ["head"] * 60 + ["tail"] * 40,
        "reference_predictions": np.where(rng.random(n) < 0.9, references, (references + 2) % 3).tolist(),
        "losses": rng.random(n).tolist(),
        "reference_losses": rng.random(n).tolist(),
        "n_boot": 200,
        "seed": 1,
    }


@pytest.fixture
def evaluate_on_hub(hub, monkeypatch, tmp_path: Path):
    """evaluate's Hub settings pointed at the loopback Hub, with an empty download cache.

    evaluate reads HF_ENDPOINT into ``evaluate.config`` at import time (like huggingface_hub), and
    the test session imported it long ago: the URL template built from it is patched, as
    ``point_huggingface_hub_at`` does for huggingface_hub. Download counting (a HEAD request to
    s3.amazonaws.com) is off; the modules cache stays where the session's is (a second
    ``evaluate_modules`` package on sys.path would not be imported)."""
    import evaluate

    config = evaluate.config
    cache = tmp_path / "evaluate_cache"
    for name, value in {
        "HF_ENDPOINT": hub.url,
        "HUB_EVALUATE_URL": hub.url + "/spaces/{path}/resolve/{revision}/{name}",
        "HF_UPDATE_DOWNLOAD_COUNTS": False,
        "HF_EVALUATE_OFFLINE": False,
        "HF_EVALUATE_CACHE": cache,
        "DOWNLOADED_EVALUATE_PATH": cache / "downloads",
    }.items():
        monkeypatch.setattr(config, name, value)
    return evaluate


def test_push_then_evaluate_load_equals_the_local_module(hub, evaluate_on_hub) -> None:
    url = push_metric(SPACE)
    assert url.startswith(f"{hub.url}/spaces/{SPACE}/commit/")
    space = hub.repo(SPACE, repo_type="space")
    assert space.sdk == "gradio" and SPACE not in hub.repos  # a Space, not a model repo
    files = space.commits[-1].files
    assert set(files) == SPACE_FILES
    assert files["group_disparity.py"] == (Path(GROUP_DISPARITY) / "group_disparity.py").read_bytes()
    card = files["README.md"].decode()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and {"evaluate", "metric"} <= set(front["tags"])
    assert f'evaluate.load("{SPACE}")' in card and "GROUP_DISPARITY)" not in card and "import GROUP_DISPARITY" not in card
    assert f'evaluate.load("{SPACE}")' in files["app.py"].decode()
    assert b"scipy" in files["requirements.txt"]

    loaded = evaluate_on_hub.load(SPACE)
    # the script came from the Space (evaluate's modules cache), not from the package folder
    assert "me--group_disparity" in type(loaded).__module__
    assert Path(sys.modules[type(loaded).__module__].__file__).read_bytes() == files["group_disparity.py"]
    fetched = [r.path for r in hub.requests_to("resolve") if r.method == "GET"]
    assert f"/spaces/{SPACE}/resolve/main/group_disparity.py" in fetched

    local = evaluate_on_hub.load(GROUP_DISPARITY)
    case = fixed_case()
    from_hub, from_path = loaded.compute(**case), local.compute(**case)
    assert from_hub == from_path
    assert from_hub["group_mcnemar_p_value"] and from_hub["group_accuracy_drop_ci"]["tail"] is not None


def test_the_card_examples_run_from_the_space(hub, evaluate_on_hub) -> None:
    """The pushed card's doctests, as written (evaluate.load of the Space), pass."""
    import doctest
    import re

    push_metric(SPACE)
    card = hub.repo(SPACE, repo_type="space").commits[-1].files["README.md"].decode()
    blocks = re.findall(r"```python\n(>>>.*?)```", card, flags=re.S)
    test = doctest.DocTestParser().get_doctest("\n".join(blocks), {}, "README.md (Space)", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0


def test_the_script_is_named_as_the_repo(hub) -> None:
    files = metric_space_files("org/fair-metric")
    assert set(files) == SPACE_FILES - {".gitattributes", "group_disparity.py"} | {"fair-metric.py"}
    assert b'evaluate.load("org/fair-metric")' in files["app.py"]
    push_metric("org/fair-metric", private=True, commit_message="metric v2")
    space = hub.repo("org/fair-metric", repo_type="space")
    assert space.private and space.commits[-1].summary == "metric v2"
    # the Space exists and holds these files already: no error, and huggingface_hub makes no empty commit
    assert push_metric("org/fair-metric").startswith(hub.url)
    assert len(space.commits) == 2


@pytest.mark.parametrize("repo_id, expected", [
    ("me/group.disparity", "cannot contain '.'"),
    ("group_disparity", "not a Hub repo id"),
    ("me/group disparity", "not a Hub repo id"),
])
def test_bad_repo_id_fails_before_any_request(hub, repo_id: str, expected: str) -> None:
    with pytest.raises(FairQuantError, match=expected):
        push_metric(repo_id)
    assert hub.requests == []


def test_no_token_fails_before_any_request(hub, monkeypatch, tmp_path: Path) -> None:
    point_huggingface_hub_at(monkeypatch, hub.url, tmp_path / "empty_home", token=None)
    with pytest.raises(FairQuantError, match="pass --token, set HF_TOKEN"):
        push_metric(SPACE)
    assert hub.requests == []


def test_hub_refusal_is_a_push_error_that_hides_the_token(hub) -> None:
    wrong = "hf_wrongToken0123456789"
    with pytest.raises(HubPushError, match="Invalid credentials") as info:
        push_metric(SPACE, token=wrong)
    text = "".join(traceback.format_exception(info.value))
    assert wrong not in text and TOKEN not in text and "rerunning the same command retries" in text
    assert SPACE not in hub.spaces


def test_cli_push_metric(hub, capsys) -> None:
    assert main(["push-metric", SPACE]) == 0
    out = capsys.readouterr().out
    assert f'evaluate.load("{SPACE}")' in out and f"{METRIC_REPO_ENV}={SPACE}" in out
    assert "group_disparity.py" in hub.repo(SPACE, repo_type="space").commits[-1].files
    assert main(["push-metric", "me/bad.name"]) == 2
    assert "cannot contain '.'" in capsys.readouterr().err


def test_metric_load_snippet(monkeypatch) -> None:
    monkeypatch.delenv(METRIC_REPO_ENV, raising=False)
    path_form = metric_load_snippet()
    assert metric_repo() is None and "evaluate.load(GROUP_DISPARITY)" in path_form
    namespace: dict = {}
    exec(path_form, namespace)  # the path form runs as printed
    assert namespace["group_disparity"].compute(predictions=[1], references=[1], groups=["a"])["accuracy"] == 1.0
    assert metric_load_snippet("me/group_disparity").endswith('evaluate.load("me/group_disparity")')
    monkeypatch.setenv(METRIC_REPO_ENV, " org/gd ")
    assert metric_repo() == "org/gd" and 'evaluate.load("org/gd")' in metric_load_snippet()
    assert "GROUP_DISPARITY" not in metric_load_snippet()
    monkeypatch.setenv(METRIC_REPO_ENV, "")
    assert metric_repo() is None
    monkeypatch.setenv(METRIC_REPO_ENV, "group_disparity")
    with pytest.raises(FairQuantError, match=METRIC_REPO_ENV):
        metric_load_snippet()
    with pytest.raises(FairQuantError, match="metric repo 'me/a.b'"):
        metric_repo("me/a.b")
