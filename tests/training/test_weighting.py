import torch

from hf_fairquant.training import GroupDROWeights, StaticGroupWeights


def test_static_weighted_loss_by_hand():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    groups = torch.tensor([0, 0, 1, 1])
    loss = StaticGroupWeights(torch.tensor([1.0, 3.0]))(losses, groups)
    assert loss.item() == (1 * 1 + 1 * 2 + 3 * 3 + 3 * 4) / (1 + 1 + 3 + 3)


def test_dro_weights_move_toward_the_high_loss_group():
    dro = GroupDROWeights(3, step_size=0.5)
    losses = torch.tensor([0.1, 0.1, 2.0, 2.0, 0.5])
    groups = torch.tensor([0, 0, 1, 1, 2])
    for _ in range(5):
        dro(losses, groups)
    q = dro.q
    assert q[1] > q[2] > q[0]
    assert torch.isclose(q.sum(), torch.tensor(1.0, dtype=q.dtype))
    # one step by hand from the uniform start
    fresh = GroupDROWeights(3, step_size=0.5)
    loss = fresh(losses, groups)
    expected_q = torch.tensor([1 / 3 * torch.exp(torch.tensor(0.05)), 1 / 3 * torch.exp(torch.tensor(1.0)),
                               1 / 3 * torch.exp(torch.tensor(0.25))], dtype=torch.float64)
    expected_q /= expected_q.sum()
    assert torch.allclose(fresh.q, expected_q)
    assert torch.isclose(loss, (expected_q.float() * torch.tensor([0.1, 2.0, 0.5])).sum(), atol=1e-6)


def test_dro_ignores_groups_absent_from_the_batch():
    dro = GroupDROWeights(2, step_size=1.0)
    loss = dro(torch.tensor([3.0, 5.0]), torch.tensor([0, 0]))
    assert dro.q[0] > dro.q[1]
    assert torch.isclose(loss, torch.tensor(4.0))  # only group 0 present: its mean loss


def test_dro_state_round_trip():
    dro = GroupDROWeights(2, step_size=1.0)
    dro(torch.tensor([3.0, 1.0]), torch.tensor([0, 1]))
    other = GroupDROWeights(2, step_size=1.0)
    other.load_state_dict(dro.state_dict())
    assert torch.equal(other.q, dro.q)
