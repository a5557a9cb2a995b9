import json

import pytest
import yaml
from transformers import HfArgumentParser

from hf_fairquant import FairQuantTrainingArguments, QuantRecipe


def test_parsed_by_hf_argument_parser_from_cli_json_and_yaml(tmp_path):
    parser = HfArgumentParser(FairQuantTrainingArguments)
    (cli,) = parser.parse_args_into_dataclasses([
        "--output_dir", str(tmp_path), "--group_sampling", "group_class_balanced", "--sampling_power", "0.5",
        "--group_weighting", '{"tail": 3.0, "head": 1.0}', "--quantization", "w2a8", "--report_to", "none",
    ])
    assert cli.group_sampling == "group_class_balanced" and cli.sampling_power == 0.5
    assert cli.group_weighting == {"tail": 3.0, "head": 1.0}
    assert cli.quantization_recipe == QuantRecipe.parse("w2a8")
    assert cli.label_names == ["labels", "group"]

    (tmp_path / "a.json").write_text(json.dumps({"output_dir": str(tmp_path), "group_weighting": "dro", "report_to": "none"}))
    (from_json,) = parser.parse_json_file(str(tmp_path / "a.json"))
    assert from_json.group_weighting == "dro"

    recipe = {"preset": "w2a8", "overrides": {"classifier*": "w8a8"}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"output_dir": str(tmp_path), "quantization": recipe, "report_to": "none"}))
    (from_yaml,) = parser.parse_yaml_file(str(tmp_path / "a.yaml"))
    assert from_yaml.quantization_recipe.layer_quant("classifier.1").weight_bits == 8
    assert QuantRecipe.parse(from_yaml.to_dict()["quantization"]) == from_yaml.quantization_recipe


def test_intersection_columns_get_one_code_column(tmp_path):
    args = FairQuantTrainingArguments(output_dir=str(tmp_path), group_column="sex,race", report_to="none")
    assert args.group_columns == ["sex", "race"] and args.label_names == ["labels", "sex×race"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"group_sampling": "balanced"}, r"unknown group_sampling 'balanced'; allowed: \['none', 'group_balanced'"),
        ({"group_weighting": "inverse"}, r"unknown group_weighting 'inverse'; allowed: \['none', 'inverse_frequency'"),
        ({"group_weighting": {"a": 0.0}}, "weights must be positive"),
        ({"group_weighting": {"a": -1}}, "weights must be positive"),
        ({"sampling_power": 1.5}, r"sampling_power must be in \[0, 1\]"),
        ({"sampling_power": -0.1}, r"sampling_power must be in \[0, 1\]"),
        ({"quantization": "w3"}, "unsupported weight bits 3"),
        ({"dro_step_size": 0}, "dro_step_size must be positive"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FairQuantTrainingArguments(output_dir=str(tmp_path), report_to="none", **kwargs)


def test_double_counting_rarity_warns(tmp_path):
    with pytest.warns(UserWarning, match="count rarity twice"):
        FairQuantTrainingArguments(
            output_dir=str(tmp_path), report_to="none", group_sampling="group_balanced",
            group_weighting="inverse_frequency",
        )
