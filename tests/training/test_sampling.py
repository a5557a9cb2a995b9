import numpy as np
import pytest

from hf_fairquant.training import GroupBalancedSampler, cell_codes, sampling_weights, target_proportions

# groups: 0 common, 1 rare; classes 0..2 with their own imbalance
RNG = np.random.default_rng(0)
GROUPS = np.r_[np.zeros(900, int), np.ones(100, int)]
LABELS = np.r_[RNG.choice(3, 900, p=[0.6, 0.3, 0.1]), RNG.choice(3, 100, p=[0.2, 0.3, 0.5])]
DRAWS = 40_000


@pytest.mark.parametrize("mode", ["group_balanced", "class_balanced", "group_class_balanced"])
@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_sampled_proportions_match_the_target(mode, power):
    cells = cell_codes(mode, GROUPS, LABELS)
    sampler = GroupBalancedSampler(sampling_weights(cells, power), num_samples=DRAWS, seed=1)
    drawn = cells[np.fromiter(iter(sampler), int)]
    for cell, share in target_proportions(cells, power).items():
        observed = np.mean(drawn == cell)
        sigma = np.sqrt(share * (1 - share) / DRAWS)
        assert abs(observed - share) < 5 * sigma, (cell, observed, share)


def test_full_power_balances_and_zero_power_keeps_frequencies():
    cells = cell_codes("group_balanced", GROUPS, LABELS)
    assert target_proportions(cells, 1.0) == pytest.approx({0: 0.5, 1: 0.5})
    assert target_proportions(cells, 0.0) == pytest.approx({0: 0.9, 1: 0.1})
    assert sampling_weights(cells, 0.0) == pytest.approx(np.full(1000, 1e-3))


def test_stream_is_seeded_by_seed_and_epoch():
    probs = sampling_weights(GROUPS, 1.0)
    a, b = GroupBalancedSampler(probs, seed=3), GroupBalancedSampler(probs, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)


def test_bad_power_and_mode():
    with pytest.raises(ValueError, match=r"sampling_power must be in \[0, 1\]"):
        sampling_weights(GROUPS, 1.5)
    with pytest.raises(ValueError, match="no cells for group_sampling 'none'"):
        cell_codes("none", GROUPS, LABELS)
