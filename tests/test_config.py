"""Shared option checks of the stage configs (``hf_fairquant._config``)."""

import pytest

from hf_fairquant._config import MAX_N_BOOT, check_n_boot
from hf_fairquant.errors import FairQuantError


def test_n_boot_is_bounded_before_any_work():
    """Issue 26, item 14: n_boot 10⁹ failed with numpy's MemoryError after the FP pass."""
    check_n_boot("audit n_boot", 0)
    check_n_boot("audit n_boot", MAX_N_BOOT)
    with pytest.raises(FairQuantError, match=r"audit n_boot must be at most 100,000 bootstrap resamples.*got 1,000,000,000"):
        check_n_boot("audit n_boot", 1_000_000_000)
    with pytest.raises(FairQuantError, match=r"audit n_boot must be an integer ≥ 0, got '10'"):
        check_n_boot("audit n_boot", "10")
