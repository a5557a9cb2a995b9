"""Fixtures for the group_disparity metric tests: the module, loaded once by path as users load it."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "wheel: builds the package wheel and installs it into a fresh venv (~20 s)")


@pytest.fixture(scope="session")
def group_disparity():
    import evaluate

    from hf_fairquant.metrics import GROUP_DISPARITY

    return evaluate.load(GROUP_DISPARITY)
