"""Pytest fixture: a loopback Hub (``tests/hub_server.py``) that huggingface_hub talks to instead of
huggingface.co, with caches and the stored login in ``tmp_path``.

Use it from a test module with ``from tests import hub_fixtures`` and ``hub = hub_fixtures.hub``
(``tests/conftest.py`` is shared, so the fixture lives here).

huggingface_hub reads its settings into ``huggingface_hub.constants`` at import time, and the
test suite imports it with ``HF_HUB_OFFLINE=1``; so environment variables (set too, for
subprocesses) are not enough: :func:`point_huggingface_hub_at` patches the constants themselves (the endpoint, the
``resolve`` URL template built from it, offline mode, the cache and token paths) and the
module-level ``HfApi`` behind ``huggingface_hub.upload_folder`` & co.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from huggingface_hub import constants, hf_api

from tests.hub_server import LoopbackHub

TOKEN = "hf_loopbackSecretToken0123456789abcdef"


def point_huggingface_hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path, token: str | None) -> None:
    """Send every huggingface_hub request to ``endpoint``, online, with ``home`` as ``HF_HOME``
    (empty: no stored login) and ``token`` as ``HF_TOKEN`` (None: no token at all)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    if token is not None:
        monkeypatch.setenv("HF_TOKEN", token)
    patched = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {urlsplit(endpoint).hostname},
        "HF_HUB_OFFLINE": False,
        # telemetry off: no user-agent probe of {ENDPOINT}/api/agent-harnesses, no telemetry pings
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A running :class:`LoopbackHub` accepting :data:`TOKEN`, which is also ``HF_TOKEN``."""
    with LoopbackHub(tokens={TOKEN}) as server:
        point_huggingface_hub_at(monkeypatch, server.url, tmp_path / "hf_home", TOKEN)
        yield server
