"""Issue 14, item 7: ordinary trainer mistakes get a FairQuantError naming the option."""

import json

import pytest
import torch

from hf_fairquant import FairQuantTrainer, FairQuantTrainingArguments
from hf_fairquant.errors import FairQuantError
from tests.conftest import image_dataset, tiny_resnet


def _args(tmp_path, **kwargs):
    return FairQuantTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"label_names": ["labels"]}, r"label_names=\['labels'\] must include \['labels', 'group'\]"),
        ({"group_column": "labels"}, "group_column 'labels' is the label column"),
        ({"group_column": " , "}, "group_column must name one or more columns"),
        ({"quantization": "{not json"}, r"quantization='\{not json' is not valid JSON"),
        ({"group_weighting": "{'a': 1}"}, "group_weighting=.* is not valid JSON"),
        ({"quantization": {"preset": "w4", "weight_bits": 2}}, "preset 'w4' means weight_bits=4"),
    ],
)
def test_bad_arguments_name_the_option(tmp_path, kwargs, message):
    with pytest.raises(FairQuantError, match=message):
        _args(tmp_path, **kwargs)


def test_label_names_with_the_group_column_are_accepted(tmp_path):
    assert _args(tmp_path, label_names=["labels", "group"]).label_names == ["labels", "group"]


def test_a_model_without_config_is_refused(tmp_path):
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 10)

        def forward(self, pixel_values, **kwargs):
            return {"logits": self.linear(pixel_values.flatten(1))}

    with pytest.raises(FairQuantError, match="needs a transformers classification model with a `config`"):
        FairQuantTrainer(model=Plain(), args=_args(tmp_path), train_dataset=image_dataset(n=16))


@pytest.mark.parametrize(
    "state, message",
    [
        ("{broken", r"fairquant_state\.json is not valid JSON"),
        (json.dumps({"group_columns": ["group"]}), r"fairquant_state\.json lacks field\(s\) \['group_names', 'quantization', 'dro'\]"),
        (json.dumps([1, 2]), r"fairquant_state\.json must hold a JSON object"),
    ],
)
def test_damaged_state_files_name_the_file_and_field(tmp_path, state, message):
    trainer = FairQuantTrainer(model=tiny_resnet(), args=_args(tmp_path / "out"), train_dataset=image_dataset(n=16))
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    (checkpoint / "fairquant_state.json").write_text(state)
    with pytest.raises(FairQuantError, match=message):
        trainer._load_from_checkpoint(str(checkpoint))


def test_a_bad_dro_field_names_the_file_and_field(tmp_path):
    trainer = FairQuantTrainer(model=tiny_resnet(), args=_args(tmp_path / "out", group_weighting="dro"),
                               train_dataset=image_dataset(n=16))
    state = {**trainer._fairquant_state(), "dro": {"weights": [0.5, 0.5]}}
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    (checkpoint / "fairquant_state.json").write_text(json.dumps(state))
    with pytest.raises(FairQuantError, match=r"fairquant_state\.json: field 'dro' must be an object with the group weights 'q'"):
        trainer._load_from_checkpoint(str(checkpoint))
