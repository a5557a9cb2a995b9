"""The torchao backend: exact round trips (ViT, DistilBERT; each preset and a mixed recipe), the
artifact plain transformers loads (a subprocess without hf_fairquant, local folder and loopback
Hub, ``from_pretrained`` and ``pipeline()``), the quanto artifact refused loudly, limitations
raised before any work."""

import json

import numpy as np
import pytest
import torch

from hf_fairquant import QuantRecipe, load_quantized, quantize, save_quantized
from hf_fairquant.batching import iterate_batches
from hf_fairquant.data.preprocessing import ImageStandardizer
from hf_fairquant.errors import FairQuantError, UnsupportedByBackendError
from hf_fairquant.quantization import LayerQuant, layer_bits
from tests import hub_fixtures
from tests.conftest import image_dataset, text_dataset, tiny_distilbert, tiny_resnet, tiny_vit
from tests.plain_transformers import run_plain

hub = hub_fixtures.hub

PRESETS = ["w8a8", "w8", "w4", "w4a8", "w2a8"]
MIXED = {  # torchao quantizes Linear only: the ViT patch embedding (a Conv2d) stays float
    "vit": {"preset": "w2a8", "overrides": {"classifier": "w8a8", "vit.layers.0.*": "w4"},
            "exclude": ["vit.embeddings.*", "vit.layers.1.mlp.fc2"]},
    "distilbert": {"preset": "w2a8", "overrides": {"classifier": "w8a8", "*.layer.0.*": "w4"}, "exclude": ["*.layer.1.ffn.lin2"]},
}
CASES = {"vit": (tiny_vit, image_dataset), "distilbert": (tiny_distilbert, text_dataset)}


def _torchao(recipe, model_name):
    recipe = {"preset": recipe, **({"exclude": ["vit.embeddings.*"]} if model_name == "vit" else {})} if isinstance(recipe, str) else recipe
    return QuantRecipe.parse({**recipe, "backend": "torchao"})


def _logits(model, data):
    with torch.no_grad():
        return torch.cat([model(**inputs).logits for inputs in iterate_batches(model, data, 16)])


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("recipe", [*PRESETS, "mixed"])
def test_round_trip_is_exact(tmp_path, name, recipe):
    make_model, make_data = CASES[name]
    data = make_data()
    recipe = _torchao(MIXED[name] if recipe == "mixed" else recipe, name)
    model = quantize(make_model(), recipe)  # no calibration data: dynamic activations
    bits = layer_bits(model)
    assert {n for n, q in bits.items() if q is not None} == {n for n, q in recipe.plan(make_model()).items() if q}
    save_quantized(model, tmp_path / "q", recipe=recipe)
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "torchao"
    reloaded = load_quantized(tmp_path / "q")
    assert layer_bits(reloaded) == bits
    assert torch.equal(_logits(model, data), _logits(reloaded, data))
    assert not torch.equal(_logits(model, data), _logits(make_model(), data))


def test_mixed_recipe_gives_each_module_its_bits():
    model = quantize(tiny_vit(), _torchao(MIXED["vit"], "vit"))
    bits = layer_bits(model)
    assert bits["classifier"] == LayerQuant(8, 8)
    assert bits["vit.layers.0.mlp.fc1"] == LayerQuant(4)
    assert bits["vit.layers.1.mlp.fc1"] == LayerQuant(2, 8)
    assert bits["vit.layers.1.mlp.fc2"] is None and bits["vit.embeddings.patch_embeddings.projection"] is None
    assert model.vit.layers[1].mlp.fc2.bias.dtype == torch.float32  # 1-d biases untouched (module-name keys)


def test_recipe_names_its_backend():
    recipe = QuantRecipe.parse("w4a8@torchao")
    assert (recipe.backend, str(recipe)) == ("torchao", "w4a8@torchao")
    again = QuantRecipe.parse(recipe.to_dict())
    assert (again.backend, str(again), again.to_dict()) == (recipe.backend, str(recipe), recipe.to_dict())
    assert QuantRecipe.parse("w4a8").backend == "quanto" and "@" not in str(QuantRecipe.parse("w4a8"))
    assert QuantRecipe.parse({"preset": "w4", "backend": "torchao", "group_size": 16}).to_dict()["group_size"] == 16
    with pytest.raises(FairQuantError, match=r"unknown quantization backend 'tensorrt'; allowed: \['onnxruntime', 'quanto', 'torchao'"):
        QuantRecipe.parse("w4@tensorrt")
    with pytest.raises(FairQuantError, match="group_size must be a positive integer"):
        QuantRecipe(4, backend="torchao", group_size=0)


def test_conv2d_is_refused_before_any_work():
    model = tiny_resnet()
    before = {n: type(m) for n, m in model.named_modules()}
    with pytest.raises(UnsupportedByBackendError, match=r"torchao quantizes nn\.Linear only.*resnet\.embedder\.embedder\.convolution.*`backend: quanto`"):
        quantize(model, "w4@torchao")
    assert {n: type(m) for n, m in model.named_modules()} == before


def test_a_group_size_that_does_not_divide_the_features_is_refused_before_any_work():
    model = tiny_vit()
    with pytest.raises(UnsupportedByBackendError, match=r"group_size=48.*does not divide the input features of vit\.layers\.0"):
        quantize(model, {"preset": "w4", "backend": "torchao", "group_size": 48, "exclude": ["vit.embeddings.*"]})
    assert type(model.classifier.weight) is torch.nn.Parameter


def test_group_size_reaches_torchao():
    coarse = quantize(tiny_vit(), {"preset": "w4", "backend": "torchao", "group_size": 64, "exclude": ["vit.embeddings.*"]})
    fine = quantize(tiny_vit(), {"preset": "w4", "backend": "torchao", "exclude": ["vit.embeddings.*"]})
    assert coarse.classifier.weight.scale.numel() * 2 == fine.classifier.weight.scale.numel()


# ---------------------------------------------------------------------------- plain transformers
@pytest.fixture(scope="module")
def published_vit(tmp_path_factory):
    """A torchao ViT folder with the fitted image processor, as a run publishes it."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 8, 8), dtype=np.uint8)
    standardizer = ImageStandardizer.fit(list(images))
    model = quantize(tiny_vit(), _torchao(MIXED["vit"], "vit"))
    folder = tmp_path_factory.mktemp("pub") / "vit"
    save_quantized(model, folder, extra={"README.md": "---\nlicense: apache-2.0\n---\n# tiny\n"})
    standardizer.image_processor((8, 8)).save_pretrained(folder)
    pixels = torch.from_numpy(standardizer(list(images)))
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    return folder, images, pixels, logits


PLAIN_IMAGE = """
import json, sys
import numpy as np
from transformers import AutoModelForImageClassification, pipeline
target, pixels = sys.argv[1] if len(sys.argv) > 1 else {target!r}, torch.load({pixels!r})
model = AutoModelForImageClassification.from_pretrained(target)
with torch.no_grad():
    torch.save(model(pixel_values=pixels).logits, {out!r})
images = np.load({images!r})
classify = pipeline("image-classification", model=target)
print(json.dumps([r[0]["label"] for r in classify([im[..., None] for im in images], top_k=1)]))
"""


def _plain_image(tmp_path, target, pixels, images):
    torch.save(pixels, tmp_path / "pixels.pt")
    np.save(tmp_path / "images.npy", images)
    code = PLAIN_IMAGE.format(target=str(target), pixels=str(tmp_path / "pixels.pt"), out=str(tmp_path / "logits.pt"),
                              images=str(tmp_path / "images.npy"))
    done = run_plain(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(tmp_path / "logits.pt"), json.loads(done.stdout.strip().splitlines()[-1])


def test_plain_transformers_loads_the_folder_exactly_and_pipeline_works(tmp_path, published_vit):
    folder, images, pixels, logits = published_vit
    plain_logits, labels = _plain_image(tmp_path, folder, pixels, images)
    assert torch.equal(plain_logits, logits)
    id2label = tiny_vit().config.id2label
    assert labels == [id2label[i] for i in logits.argmax(-1).tolist()]


def test_plain_transformers_loads_it_from_the_hub(tmp_path, published_vit, hub):
    from hf_fairquant.hub import push_folder

    folder, images, pixels, logits = published_vit
    push_folder(folder, "me/tiny-vit-torchao")
    plain_logits, labels = _plain_image(tmp_path, "me/tiny-vit-torchao", pixels, images)
    assert torch.equal(plain_logits, logits)
    assert labels == [tiny_vit().config.id2label[i] for i in logits.argmax(-1).tolist()]
    assert torch.equal(_logits_of(load_quantized("me/tiny-vit-torchao"), pixels), logits)


def _logits_of(model, pixels):
    with torch.no_grad():
        return model(pixel_values=pixels).logits


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i for i in range(2, 100)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


PLAIN_TEXT = """
import json
from transformers import AutoModelForSequenceClassification, pipeline
classify = pipeline("text-classification", model={target!r})
print(json.dumps([r["label"] for r in classify({texts!r})]))
"""


def test_text_pipeline_with_plain_transformers(tmp_path):
    tokenizer = _word_tokenizer()
    model = quantize(tiny_distilbert(), _torchao(MIXED["distilbert"], "distilbert"))
    save_quantized(model, tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    texts = [" ".join(f"w{(7 * i + j) % 98 + 2}" for j in range(6)) for i in range(5)]
    with torch.no_grad():
        expected = model(**tokenizer(texts, return_tensors="pt")).logits.argmax(-1).tolist()
    done = run_plain(PLAIN_TEXT.format(target=str(tmp_path / "bert"), texts=texts), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [model.config.id2label[i] for i in expected]


PLAIN_QUANTO = """
from transformers import {auto}, pipeline
try:
    {auto}.from_pretrained({target!r})
except Exception as err:
    print("from_pretrained:", type(err).__name__, str(err).replace("\\n", " "))
else:
    print("from_pretrained: LOADED")
try:
    pipeline({task!r}, model={target!r})
except Exception as err:
    print("pipeline:", type(err).__name__, str(err).replace("\\n", " "))
else:
    print("pipeline: LOADED")
"""


@pytest.mark.parametrize("name", ["resnet", "distilbert"])
def test_a_quanto_folder_fails_loudly_in_plain_transformers(tmp_path, name):
    make_model, make_data = {"resnet": (tiny_resnet, image_dataset), **CASES}[name]
    model = quantize(make_model(), "w4")
    save_quantized(model, tmp_path / "q")
    auto, task = (("AutoModelForSequenceClassification", "text-classification") if name == "distilbert"
                  else ("AutoModelForImageClassification", "image-classification"))
    done = run_plain(PLAIN_QUANTO.format(auto=auto, task=task, target=str(tmp_path / "q")), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines()[-2:])
    for step in ("from_pretrained", "pipeline"):
        assert lines[step].startswith("ValueError") and "load_quantized" in lines[step], lines
    data = make_data()
    assert torch.equal(_logits(load_quantized(tmp_path / "q"), data), _logits(model, data))  # hf_fairquant still loads it


def test_audit_compares_the_two_backends_on_one_recipe():
    from hf_fairquant.audit import AuditConfig, audit

    data = text_dataset(n=48)
    report = audit(tiny_distilbert(), data, ["w4a8", "w4a8@torchao"], "group", calibration_dataset=data,
                   config=AuditConfig(n_boot=0, calibration_size=16))
    names = [r.name for r in report.quantized]
    assert names == ["W4A8", "W4A8@TORCHAO"]
    assert report.quantized[1].recipe["backend"] == "torchao" and report.quantized[0].recipe["backend"] == "quanto"
    assert AuditConfig(recipes=["w8a8", "w4@quanto"], backend="torchao").recipes == ["w8a8@torchao", "w4@quanto"]
    with pytest.raises(FairQuantError, match="audit backend 'onnx' is not one of"):
        AuditConfig(backend="onnx")


def test_a_truncated_torchao_folder_does_not_load(tmp_path):
    from safetensors.torch import load_file, save_file

    from hf_fairquant.errors import ArtifactError

    save_quantized(quantize(tiny_distilbert(), _torchao("w4", "distilbert")), tmp_path / "q")
    weights = tmp_path / "q" / "model.safetensors"
    with open(weights, "rb") as f:  # keep torchao's metadata, drop one float tensor
        import struct

        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    state = load_file(str(weights))
    del state["distilbert.embeddings.LayerNorm.weight"]
    header["__metadata__"].pop("hf_fairquant_self_sha256")  # as if written elsewhere: the key check is tested here
    save_file(state, str(weights), metadata=header["__metadata__"])
    with pytest.raises(ArtifactError, match=r"model.safetensors differ\(s\) from what .*hf_fairquant.json records"):
        load_quantized(tmp_path / "q")  # the recorded file hash catches it first
    meta_file = tmp_path / "q" / "hf_fairquant.json"
    meta = json.loads(meta_file.read_text())
    del meta["files_sha256"]  # a folder without the record: the key check still refuses it
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="missing_keys.*LayerNorm"):
        load_quantized(tmp_path / "q")


def test_explain_refuses_a_torchao_recipe_before_any_work():
    from hf_fairquant.diagnostics import explain

    with pytest.raises(UnsupportedByBackendError, match="explain measures gradients and curvature through straight-through quantized modules"):
        explain(tiny_distilbert(), "w4a8@torchao", text_dataset(), "group")
