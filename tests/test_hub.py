"""push_folder against a loopback Hub: push → load back, failures, redaction, checks before any request."""

from __future__ import annotations

import json
import logging
import socket
import traceback
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData, constants
from huggingface_hub.utils import _http
from huggingface_hub.utils._runtime import is_xet_available

from hf_fairquant import load_quantized
from hf_fairquant.hub import HubPushError, push_folder
from hf_fairquant.quantization import QuantRecipe, quantize, save_quantized
from tests import hub_fixtures
from tests.hub_fixtures import TOKEN, point_huggingface_hub_at
from tests.hub_server import GITATTRIBUTES

hub = hub_fixtures.hub  # the loopback-Hub fixture, for this module's tests

REPO = "user/tiny-w4"
MESSAGE = "hf-fairquant: w4 quantized model (4.00 bits), model card, audit report, plots"
needs_xet = pytest.mark.skipif(not is_xet_available(), reason="upload_folder pipelines uploads only with hf_xet")


def good_card() -> str:
    data = ModelCardData(
        model_name="tiny-w4",
        library_name="transformers",
        eval_results=[
            EvalResult(task_type="image-classification", dataset_type="digits", dataset_name="digits",
                       dataset_split="test", metric_type="accuracy", metric_name=f"accuracy ({group})",
                       metric_value=value)
            for group, value in (("head", 0.9), ("tail", 0.6))
        ],
    )
    return str(ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n# tiny-w4\n"))


@pytest.fixture(scope="module")
def quantized():
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                          downsample_in_first_stage=False, num_labels=3)
    return quantize(ResNetForImageClassification(config).eval(), "w4")


@pytest.fixture
def folder(quantized, tmp_path: Path) -> Path:
    """An output folder as a run writes it: quantized model, card, report, results, plots."""
    out = tmp_path / "out"
    save_quantized(quantized, out, recipe=QuantRecipe.parse("w4"), extra={
        "README.md": good_card(), "report.md": "# audit\n", "results.json": json.dumps({"overall": 0.8}),
    })
    (out / "plots").mkdir()
    (out / "plots" / "group_accuracy.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return out


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones too): file bytes, or None for a folder."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=torch.linspace(-2, 2, 2 * 8 * 8).reshape(2, 1, 8, 8)).logits


def single_commit_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """What huggingface_hub does without hf_xet: ``upload_folder`` → one ``create_commit``, no retries."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


def no_backoff_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """With hf_xet (the default), commits are retried on 5xx with 1-8 s sleeps; skip the waits."""
    monkeypatch.setattr(_http, "time", SimpleNamespace(sleep=lambda seconds: None))


def test_push_then_load_back_is_exact(hub, folder: Path, quantized) -> None:
    before = snapshot(folder)
    url = push_folder(folder, REPO)  # token from HF_TOKEN

    assert url.startswith(f"{hub.url}/{REPO}/commit/")
    repo = hub.repo(REPO)
    assert [c.summary for c in repo.commits] == ["initial commit", MESSAGE]
    assert len(hub.requests_to("commit")) == 1
    writes = hub.requests_to("create_repo") + hub.requests_to("preupload") + hub.requests_to("commit")
    assert writes and all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in writes)
    local_files = {k: v for k, v in before.items() if v is not None}
    assert repo.commits[-1].files == {**local_files, ".gitattributes": GITATTRIBUTES}
    assert snapshot(folder) == before

    assert torch.equal(logits(load_quantized(REPO)), logits(quantized))


def test_push_private_repo_with_token_argument_and_message(hub, folder: Path, quantized, monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN")
    push_folder(folder, "org/private-w4", token=TOKEN, private=True, commit_message="first upload")

    repo = hub.repo("org/private-w4")
    assert repo.private and repo.commits[-1].summary == "first upload"
    assert torch.equal(logits(load_quantized("org/private-w4", token=TOKEN)), logits(quantized))


@pytest.mark.parametrize("path", ["single-commit", pytest.param("pipelined", marks=needs_xet)])
def test_failed_commit_is_clear_redacted_and_retryable(
    hub, folder: Path, quantized, monkeypatch, caplog, capfd, path: str
) -> None:
    if path == "single-commit":
        single_commit_path(monkeypatch)
        hub.fail_next("commit", status=500, times=1)
    else:  # huggingface_hub retries the commit on 5xx: keep failing until it gives up
        no_backoff_sleep(monkeypatch)
        hub.fail_next("commit", status=500, times=100)
    for name in (None, "huggingface_hub", "hf_fairquant"):
        caplog.set_level(logging.DEBUG, logger=name)
    before = snapshot(folder)

    with pytest.raises(HubPushError) as info:
        push_folder(folder, REPO)

    err = info.value
    assert isinstance(err, RuntimeError)
    text = str(err)
    assert f"to {REPO} failed" in text and "500" in text
    assert "is unchanged" in text and "rerunning the same command retries" in text
    assert "hf_***" in text  # the server echoed the Authorization header: redacted, not dropped
    out, errs = capfd.readouterr()
    for where in (text, "".join(traceback.format_exception(err)), caplog.text, out, errs):
        assert TOKEN not in where
    assert err.__cause__ is None and err.__context__ is None
    # it failed mid-way: the repo exists, the files were announced, nothing was committed
    assert hub.requests_to("create_repo") and hub.requests_to("preupload") and hub.requests_to("commit")
    assert [c.summary for c in hub.repo(REPO).commits] == ["initial commit"]
    assert snapshot(folder) == before

    hub.fail_next("commit", times=0)
    push_folder(folder, REPO)
    assert [c.summary for c in hub.repo(REPO).commits] == ["initial commit", MESSAGE]
    assert torch.equal(logits(load_quantized(REPO)), logits(quantized))


@needs_xet
def test_transient_commit_error_is_retried_by_huggingface_hub(hub, folder: Path, monkeypatch) -> None:
    no_backoff_sleep(monkeypatch)
    hub.fail_next("commit", status=503, times=1)
    push_folder(folder, REPO)
    assert len(hub.requests_to("commit")) == 2
    assert [c.summary for c in hub.repo(REPO).commits] == ["initial commit", MESSAGE]


def test_unreachable_hub_is_a_push_error(hub, folder: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(HubPushError, match="ConnectError") as info:
        push_folder(folder, REPO, endpoint=dead)
    assert "is unchanged" in str(info.value) and TOKEN not in str(info.value)


def test_wrong_token_is_a_push_error_that_hides_it(hub, folder: Path) -> None:
    wrong = "hf_wrongToken0123456789"
    with pytest.raises(HubPushError, match="Invalid credentials") as info:
        push_folder(folder, REPO, token=wrong)
    assert wrong not in "".join(traceback.format_exception(info.value))
    assert REPO not in hub.repos


def test_readme_rejected_by_the_hub_is_a_push_error(hub, folder: Path) -> None:
    (folder / "README.md").write_text("---\nmodel-index: {name: x}\n---\n# x\n")
    with pytest.raises(HubPushError, match="Invalid metadata in README.md") as info:
        push_folder(folder, REPO)
    assert '"model-index" must be an array' in str(info.value)
    assert not hub.requests_to("commit")


def test_no_token_fails_before_any_request(hub, folder: Path, monkeypatch, tmp_path: Path) -> None:
    point_huggingface_hub_at(monkeypatch, hub.url, tmp_path / "empty_home", token=None)
    with pytest.raises(ValueError, match=r"pass --token, set HF_TOKEN, or run `hf auth login`"):
        push_folder(folder, REPO)
    assert hub.requests == []


@pytest.mark.parametrize("breakage, expected", [
    ("no quantization map", "lacks quantization_map.json"),
    ("no card", "lacks README.md"),
    ("a file", "is not a folder"),
    ("missing", "does not exist"),
])
def test_bad_folder_fails_before_any_request(hub, folder: Path, breakage: str, expected: str) -> None:
    if breakage == "no quantization map":
        (folder / "quantization_map.json").unlink()
    elif breakage == "no card":
        (folder / "README.md").unlink()
    target = {"a file": folder / "config.json", "missing": folder / "nope"}.get(breakage, folder)
    with pytest.raises(ValueError, match=expected):
        push_folder(target, REPO)
    assert hub.requests == []


@pytest.mark.parametrize(
    "repo_id", ["tiny-w4", "user/tiny/w4", "user/tiny w4", "user/-tiny", "user/a--b", "/tiny", "user/x\n", ""]
)
def test_bad_repo_id_fails_before_any_request(hub, folder: Path, repo_id: str) -> None:
    with pytest.raises(ValueError, match="expected 'namespace/name'"):
        push_folder(folder, repo_id)
    assert hub.requests == []


def test_model_card_validation_asks_the_hub(hub) -> None:
    ModelCard(good_card()).validate()
    assert len(hub.requests_to("validate_yaml")) == 1

    # ModelCard itself rejects missing model-index keys; wrong types reach the Hub, which rejects them
    card = ModelCard(good_card().replace("type: image-classification", "type: 5").replace("name: digits", "name: [1]"))
    with pytest.raises(ValueError) as info:
        card.validate()
    assert '"model-index[0].results[0].task.type" is required and must be a string' in str(info.value)
    assert '"model-index[0].results[0].dataset.name" is required and must be a string' in str(info.value)
