"""The run as stages: selected stages only, typed RunResult round trip, pinned threads."""

import pytest
import torch

from hf_fairquant.errors import FairQuantError
from hf_fairquant.results import RunResult
from hf_fairquant.run import load_recipe, run, selected_stages
from tests.fail_early_fixtures import save_data, tiny_recipe, write_recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return save_data(tmp_path_factory.mktemp("data") / "d", ["a", "b"], ["a", "b"], n_train=24, n_test=12)


def _recipe(tmp_path, data, **sections):
    return load_recipe(write_recipe(tmp_path / "r.yaml", tiny_recipe(data, **sections)), output_dir=str(tmp_path / "out"))


def test_stages_are_chosen_from_the_recipe_or_named(tmp_path, data):
    recipe = _recipe(tmp_path, data, mitigation={"quantization": "w8", "max_steps": 1, "report_to": "none"})
    assert selected_stages(recipe, None) == ("data", "fp", "audit", "mitigate", "publish")
    assert selected_stages(recipe, ["mitigate"]) == ("data", "fp", "mitigate")
    with pytest.raises(FairQuantError, match=r"unknown stage\(s\) \['train'\]"):
        selected_stages(recipe, ["train"])
    with pytest.raises(FairQuantError, match=r"stage\(s\) \['export'\] were asked for but the recipe does not configure"):
        selected_stages(recipe, ["export"])


def test_a_run_without_publish_writes_nothing_and_its_result_round_trips(tmp_path, data):
    recipe = _recipe(tmp_path, data, threads=1)
    before = torch.get_num_threads()
    result = run(recipe, stages=["audit"], echo=lambda *_: None)
    assert not (tmp_path / "out").exists()  # no publish stage: nothing written
    assert torch.get_num_threads() == before and result.environment["threads"] == 1
    assert [r.name for r in result.audit.quantized] == ["W8"] and result.model.task == "classification"
    again = RunResult.from_json(result.to_json())
    assert again.to_dict() == result.to_dict() and again.audit.fp == result.audit.fp


def test_the_threads_key_is_checked(tmp_path, data):
    with pytest.raises(FairQuantError, match="'threads' must be a positive integer"):
        _recipe(tmp_path, data, threads=0)
