import pytest
import torch

from hf_fairquant import QuantRecipe, effective_bits, model_size_bytes, quantize
from hf_fairquant.quantization import LayerQuant, layer_bits, parse_recipes
from tests.conftest import image_dataset, tiny_distilbert, tiny_resnet, tiny_vit


@pytest.mark.parametrize(
    "text, weight_bits, activation_bits",
    [("w8a8", 8, 8), ("w4a8", 4, 8), ("w4", 4, None), ("w2a8", 2, 8), ("W8", 8, None)],
)
def test_presets_parse(text, weight_bits, activation_bits):
    recipe = QuantRecipe.parse(text)
    assert (recipe.weight_bits, recipe.activation_bits) == (weight_bits, activation_bits)


@pytest.mark.parametrize(
    "text, message",
    [("w3a8", r"unsupported weight bits 3; allowed: \[2, 4, 8\]"), ("w4a4", "unsupported activation bits 4"),
     ("int4", r"unknown quantization preset 'int4'; allowed: \['w8a8', 'w4a8', 'w4', 'w2a8'\]")],
)
def test_bad_presets(text, message):
    with pytest.raises(ValueError, match=message):
        QuantRecipe.parse(text)


def test_unsupported_bits_in_constructor():
    with pytest.raises(ValueError, match="unsupported weight bits 16"):
        QuantRecipe(weight_bits=16)


def test_parse_list_and_mapping():
    recipes = parse_recipes("w8a8, w4")
    assert [str(r) for r in recipes] == ["w8a8", "w4"]
    mixed = QuantRecipe.parse({"preset": "w2a8", "overrides": {"classifier*": "w8a8"}, "exclude": ["*embedder*"]})
    assert mixed.layer_quant("classifier.1") == LayerQuant(8, 8)
    assert mixed.layer_quant("resnet.embedder.embedder.convolution") is None
    assert mixed.layer_quant("resnet.encoder.stages.0.layers.0.layer.0.convolution") == LayerQuant(2, 8)
    with pytest.raises(ValueError, match=r"unknown recipe key\(s\) \['bits'\]"):
        QuantRecipe.parse({"bits": 4})


def test_first_matching_override_wins():
    recipe = QuantRecipe(4, overrides={"vit.layers.0.*": "w8", "vit.*": "w2"})
    assert recipe.layer_quant("vit.layers.0.mlp.fc1").weight_bits == 8
    assert recipe.layer_quant("vit.layers.1.mlp.fc1").weight_bits == 2


def test_override_matching_no_module_fails_and_lists_modules():
    with pytest.raises(ValueError, match=r"override pattern 'decoder\.\*' matches no Conv2d/Linear module.*vit.layers.0.mlp.fc1"):
        QuantRecipe(4, overrides={"decoder.*": "w8"}).plan(tiny_vit())
    with pytest.raises(ValueError, match="exclude pattern 'nothing' matches no"):
        QuantRecipe(4, exclude=["nothing"]).plan(tiny_vit())


def test_model_without_quantizable_modules():
    with pytest.raises(ValueError, match="has no Conv2d or Linear module to quantize"):
        quantize(torch.nn.Sequential(torch.nn.ReLU()), "w8")


def test_recipe_excluding_everything():
    with pytest.raises(ValueError, match="excludes every Conv2d/Linear"):
        QuantRecipe(4, exclude=["*"]).plan(tiny_resnet())


def test_activation_recipe_needs_calibration_data():
    with pytest.raises(ValueError, match="quantizes activations: pass a calibration_dataset"):
        quantize(tiny_resnet(), "w4a8")


@pytest.mark.parametrize("make_model", [tiny_resnet, tiny_vit, tiny_distilbert])
def test_every_conv_and_linear_is_quantized(make_model):
    model = quantize(make_model(), "w4")
    bits = layer_bits(model)
    assert bits and all(q == LayerQuant(4) for q in bits.values())
    assert effective_bits(model) == pytest.approx(4.0)


def test_effective_bits_is_parameter_weighted():
    model = tiny_vit()
    recipe = QuantRecipe(2, overrides={"classifier": "w8"}, exclude=["vit.layers.1.mlp.*"])
    sizes = {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    expected = sum(
        n * (8 if name == "classifier" else 32 if name.startswith("vit.layers.1.mlp.") else 2)
        for name, n in sizes.items()
    ) / sum(sizes.values())
    assert recipe.effective_bits(model) == pytest.approx(expected)
    quantize(model, recipe)
    assert effective_bits(model) == pytest.approx(expected)


def test_size_shrinks_with_bits():
    sizes = {b: model_size_bytes(quantize(tiny_vit(), f"w{b}")) for b in (8, 4, 2)}
    fp = model_size_bytes(tiny_vit())
    assert fp > sizes[8] > sizes[4] > sizes[2]


def test_mixed_precision_quantizes_per_pattern():
    data = image_dataset()
    model = quantize(tiny_resnet(), QuantRecipe(2, 8, overrides={"classifier.*": "w8a8"}), data, calibration_size=16)
    bits = layer_bits(model)
    assert bits["classifier.1"] == LayerQuant(8, 8)
    assert bits["resnet.embedder.embedder.convolution"] == LayerQuant(2, 8)


# ---------------------------------------------------------------- issue 26 item 13: YAML shapes users write
def test_empty_overrides_and_exclude_mean_none():
    import yaml

    for text in ("preset: w4\noverrides:\nexclude:\n", "preset: w4\noverrides: {}\nexclude: []\n"):
        recipe = QuantRecipe.parse(yaml.safe_load(text))  # was: "'NoneType' object is not iterable"
        assert (recipe.overrides, recipe.exclude) == ((), ())
    listed = QuantRecipe.parse(yaml.safe_load("preset: w4\noverrides:\n  - classifier: w8a8\n  - 'vit.*': w8\n"))
    assert listed.overrides == (("classifier", LayerQuant(8, 8)), ("vit.*", LayerQuant(8)))  # YAML's list of one-key mappings


@pytest.mark.parametrize("overrides", [["classifier"], "classifier", [["classifier"]], 3])
def test_a_list_of_override_names_is_refused_with_the_mapping_form(overrides):
    with pytest.raises(ValueError, match=r"overrides map module-name patterns to bits, e\.g\. in YAML `overrides: \{classifier: w8a8\}`"):
        QuantRecipe.parse({"preset": "w4", "overrides": overrides})  # was: "too many values to unpack"


def test_exclude_must_be_names():
    with pytest.raises(ValueError, match=r"recipe exclude must be a module-name pattern or a list of them.*got dict"):
        QuantRecipe.parse({"preset": "w4", "exclude": {"classifier": True}})
    with pytest.raises(ValueError, match=r"got list \[1\]"):
        QuantRecipe(4, exclude=[1])


@pytest.mark.parametrize("recipe, make_model", [("w8", tiny_resnet), ("w8@torchao", tiny_distilbert)])
def test_quantizing_a_quantized_model_says_so(recipe, make_model):
    """Issue 26, item 14: was "has no Conv2d or Linear module to quantize"."""
    model = quantize(make_model(), recipe)
    backend = recipe.partition("@")[2] or "quanto"
    with pytest.raises(ValueError, match=f"quantize needs a full-precision model, but this .* is already quantized by {backend}"):
        quantize(model, "w4")
