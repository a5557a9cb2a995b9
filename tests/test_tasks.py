"""Tasks: one registered module each; a model's head picks its task, a head that does not fit is refused."""

import numpy as np
import pytest
import torch

from hf_fairquant.errors import FairQuantError
from hf_fairquant.tasks import TaskOutputs, available_tasks, get_task, head_kind, task_for_architecture, task_of
from tests.conftest import tiny_resnet


@pytest.fixture(scope="module")
def causal_lm_folder(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("llama")
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_the_registry_finds_the_task_modules():
    assert "classification" in available_tasks()
    assert get_task("classification").name == "classification"
    with pytest.raises(FairQuantError, match=r"unknown task 'regression'; allowed: \["):
        get_task("regression")


def test_a_head_picks_its_task_and_a_foreign_head_is_refused():
    assert task_for_architecture("ViTForImageClassification").name == "classification"
    assert task_of(tiny_resnet()).name == "classification"
    assert head_kind("LlamaForCausalLM") == "causal-lm" and head_kind("MyOwnModel") is None
    with pytest.raises(FairQuantError, match="LlamaForCausalLM is a causal-lm model: its head does not fit the task 'classification'"):
        get_task("classification").check_architecture("LlamaForCausalLM")
    get_task("classification").check_architecture("MyOwnModel")  # a custom class is taken as it is


def test_classification_outputs_equal_a_direct_computation():
    task = get_task("classification")
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, 1.0, 3.0]])
    labels = torch.tensor([0, 0, 2])
    out = task.batch_outputs(logits, labels)
    assert out.predictions.tolist() == [0, 2, 2] and out.correct.tolist() == [True, False, True]
    want = -torch.log_softmax(logits, -1)[torch.arange(3), labels]
    assert np.allclose(out.losses, want.numpy()) and out.units.tolist() == [1, 1, 1]
    numpy_out = task.eval_outputs(logits.numpy(), labels.numpy())
    assert np.allclose(numpy_out.losses, want.numpy(), atol=1e-6)
    assert numpy_out.predictions.tolist() == out.predictions.tolist()


def test_agreement_is_per_example_over_scored_units():
    a = TaskOutputs(np.zeros(2), np.array([3, 1]), np.array([1, 2, 3, 4]), np.ones(4, bool))
    b = TaskOutputs(np.zeros(2), np.array([3, 1]), np.array([1, 0, 3, 5]), np.ones(4, bool))
    assert a.agreement(b).tolist() == pytest.approx([2 / 3, 0.0])
    with pytest.raises(FairQuantError, match="no single prediction per example"):
        a.example_predictions()


def test_the_cli_refuses_a_causal_lm_folder_for_a_classification_audit_before_loading_data(
    causal_lm_folder, tmp_path, capsys, monkeypatch
):
    import hf_fairquant.run.runner as runner
    from hf_fairquant.cli import main

    monkeypatch.setattr(runner, "load_recipe_data", lambda *a, **k: pytest.fail("loaded data before checking the head"))
    code = main(["audit", "--model", str(causal_lm_folder), "--task", "classification", "--dataset", "digits",
                 "--recipes", "w8", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "LlamaForCausalLM is a causal-lm model: its head does not fit the task 'classification'" in err
    assert "AutoModelForImageClassification" in err  # what a classification model of this data is built with
    assert not (tmp_path / "out").exists()
