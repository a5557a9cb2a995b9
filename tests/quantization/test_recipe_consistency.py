"""Issue 14, item 8: recipes that would be mislabelled are refused; item 6: no silent uncalibrated model."""

import pytest

from hf_fairquant import QuantRecipe, quantize
from hf_fairquant.errors import FairQuantError
from hf_fairquant.quantization import parse_recipes
from tests.conftest import image_dataset, tiny_resnet


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"preset": "w4", "weight_bits": 8}, r"preset 'w4' means weight_bits=4, but the recipe also sets weight_bits=8"),
        ({"preset": "w4a8", "activation_bits": None}, r"means activation_bits=8, but the recipe also sets activation_bits=None"),
        ({"weight_bits": 2, "name": "w8"}, r"recipe name 'w8' reads as a preset but the recipe is w2"),
        ({"preset": "w2a8", "name": "W2A8", "overrides": {"classifier*": "w8a8"}}, r"reads as a preset but the recipe is w2a8\+"),
        ({"weight_bits": "four"}, r"recipe bits must be integers, got \{'weight_bits': 'four'\}"),
        ({"preset": "w4", "name": 7}, "recipe name must be a string"),
        ({"overrides": {"classifier*": {"activation_bits": 8}}}, "need `weight_bits`"),
    ],
)
def test_contradicting_recipes_are_refused(mapping, message):
    with pytest.raises(FairQuantError, match=message):
        QuantRecipe.parse(mapping)


def test_consistent_names_and_quoted_bits_parse():
    assert str(QuantRecipe.parse({"preset": "w4", "weight_bits": 4})) == "w4"
    assert QuantRecipe.parse({"weight_bits": "8", "activation_bits": "8"}).default == QuantRecipe.parse("w8a8").default
    assert str(QuantRecipe.parse({"preset": "w2a8", "name": "w2a8-mixed", "overrides": {"classifier*": "w8a8"}})) == "w2a8-mixed"


@pytest.mark.parametrize(
    "recipes, message",
    [
        (["w8a8", "W8A8"], r"the name 'w8a8' is already taken by 'w8a8'"),
        (["w4", {"weight_bits": 2, "name": "w4-x"}, {"weight_bits": 8, "name": "W4-X"}], r"'W4-X' is already taken"),
        ([{"weight_bits": 8, "name": "fp"}], "taken by the full-precision row"),
        ([3], r"cannot make a QuantRecipe from int 3"),
    ],
)
def test_report_rows_need_distinct_names(recipes, message):
    with pytest.raises(FairQuantError, match=message):
        parse_recipes(recipes)


def test_activation_quantization_with_an_empty_calibration_set_is_refused():
    empty = image_dataset(n=8).select([])
    with pytest.raises(FairQuantError, match=r"calibration_dataset is empty \(Dataset of 0 rows\)"):
        quantize(tiny_resnet(), "w8a8", empty)
    with pytest.raises(FairQuantError, match="batch_size must be a positive integer, got 0"):
        quantize(tiny_resnet(), "w8a8", image_dataset(n=8), batch_size=0)
