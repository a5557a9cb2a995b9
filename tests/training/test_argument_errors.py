"""Issue 14, item 7: ordinary trainer mistakes get a FairQuantError naming the option."""

import json

import pytest
import torch

from hf_fairquant import FairQuantTrainer, FairQuantTrainingArguments
from hf_fairquant.errors import FairQuantError
from tests.conftest import image_dataset


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

    with pytest.raises(FairQuantError, match="needs a transformers model with a `config`"):
        FairQuantTrainer(model=Plain(), args=_args(tmp_path), train_dataset=image_dataset(n=16))


def _checkpoint(tmp_path, text):
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(text)
    return str(checkpoint)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{broken", r"trainer_state\.json is not a readable TrainerState"),
        (json.dumps({"global_step": 1}), r"trainer_state\.json has no stateful_callbacks\['FairQuantState'\] with 'args'"),
    ],
)
def test_damaged_state_files_name_the_file_and_field(tmp_path, text, message):
    from hf_fairquant.training.state import saved_state

    with pytest.raises(FairQuantError, match=message):
        saved_state(_checkpoint(tmp_path, text))


def test_a_bad_dro_field_names_the_file_and_field(tmp_path):
    from hf_fairquant.training.state import FairQuantState

    state = FairQuantState(None, ["group"], ["a", "b"], dro_step_size=0.01)
    saved = state.state()
    saved["attributes"]["dro_q"] = [1.0, 0.0, 0.0]  # three groups' weights for two groups
    checkpoint = _checkpoint(tmp_path, json.dumps({"stateful_callbacks": {"FairQuantState": saved}}))
    with pytest.raises(FairQuantError, match=r"trainer_state\.json: stateful_callbacks\['FairQuantState'\]: field attributes\.dro_q"):
        state.restore(checkpoint)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", r"report\.json is not valid JSON"),
        (json.dumps({"group_columns": ["group"]}), r"report\.json lacks the field 'group_names' \(AuditReport needs it\)"),
        (json.dumps([1]), r"report\.json does not hold AuditReport data"),
    ],
)
def test_damaged_saved_reports_name_the_file_and_the_field(tmp_path, text, message):
    from hf_fairquant.audit import AuditReport

    (tmp_path / "report.json").write_text(text)
    with pytest.raises(FairQuantError, match=message):
        AuditReport.load(tmp_path / "report.json")


def test_a_string_sampling_power_is_named_a_string_and_yaml_converts_it(tmp_path):
    """Issue 26, item 19: "must be in [0, 1], got '0.5'" read as a range error."""
    from transformers import HfArgumentParser

    from hf_fairquant._coerce import coerce_fields

    with pytest.raises(FairQuantError, match=r"sampling_power must be a number in \[0, 1\], got str '0\.5' \(YAML recipes"):
        _args(tmp_path, sampling_power="0.5")
    with pytest.raises(FairQuantError, match=r"sampling_power must be in \[0, 1\], got 1\.5"):
        _args(tmp_path, sampling_power=1.5)
    values = coerce_fields("mitigation", FairQuantTrainingArguments, {"output_dir": str(tmp_path), "sampling_power": "0.5"})
    (parsed,) = HfArgumentParser(FairQuantTrainingArguments).parse_dict(values)  # what a YAML recipe goes through
    assert parsed.sampling_power == 0.5
