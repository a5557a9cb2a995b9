"""A backend added from one file outside the package goes through the whole chain:
quantize → audit → save → load → card, and the card says what that backend says of itself."""

import copy

import torch

from hf_fairquant import audit, effective_bits, load_quantized, quantize, save_quantized
from hf_fairquant.audit import QuantizedModel
from hf_fairquant.quantization import QuantRecipe, available_backends, get_backend, quantizer_of
from tests import toy_backend
from tests.conftest import text_dataset, tiny_distilbert


def _logits(model, data):
    with torch.no_grad():
        return model(input_ids=torch.tensor(data["input_ids"][:8]),
                     attention_mask=torch.tensor(data["attention_mask"][:8])).logits


def test_a_toy_backend_runs_quantize_audit_save_load_card(tmp_path):
    from hf_fairquant.cards import render_card
    from hf_fairquant.results import DataInfo, ModelInfo, Mitigation, Published, RunResult

    assert "toy" in available_backends() and get_backend("toy").quantizer is toy_backend.TOY
    model, data = tiny_distilbert(), text_dataset()
    recipe = QuantRecipe.parse({"preset": "w4", "backend": "toy", "exclude": ["classifier"], "name": "toy4"})
    qmodel = quantize(copy.deepcopy(model), recipe)
    assert quantizer_of(qmodel) is toy_backend.TOY
    linear = [m for m in qmodel.modules() if isinstance(m, toy_backend.ToyLinear)]
    assert linear and all(m.codes.abs().max() <= 8 for m in linear)  # 4-bit signed codes
    assert 4 < effective_bits(qmodel) < 32

    report = audit(model, data, [recipe], "group", n_boot=0, progress=False,
                   quantized_models={"DIRECT": QuantizedModel(qmodel, recipe)})
    assert report.result("TOY4@TOY").metrics == report.result("DIRECT").metrics  # the recipe and the direct model agree
    assert report.result("TOY4@TOY").effective_bits == effective_bits(qmodel)

    save_quantized(qmodel, tmp_path / "q", recipe=recipe)
    assert {"config.json", "toy.safetensors", "toy.json", "hf_fairquant.json"} <= {p.name for p in (tmp_path / "q").iterdir()}
    reloaded = load_quantized(tmp_path / "q")
    assert torch.equal(_logits(reloaded, data), _logits(qmodel, data))

    row = report.result("DIRECT")
    result = RunResult(
        command="python toy.py", hf_fairquant_version="0",
        model=ModelInfo(None, "distilbert", 1, "classification", "text-classification",
                        "AutoModelForSequenceClassification", True),
        data=DataInfo("mine", "train", "test", ["group"], report.group_names,
                      {"train": report.fp.metrics["group_count"], "test": report.fp.metrics["group_count"]}),
        card={"model_name": "toy-model", "repo_id": "me/toy-model", "license": "apache-2.0", "tags": []},
        audit=report,
        mitigation=Mitigation("DIRECT", recipe.to_dict(), {}),
        published=Published("DIRECT", "toy", row.effective_bits, row.size_bytes, report.fp.size_bytes,
                            {n: str(q) for n, q in toy_backend.TOY.layer_bits(qmodel).items()}),
    )
    card = render_card(result)
    assert "toyquant" in card.data.tags and card.data.library_name == "hf-fairquant"
    assert 'load_quantized("me/toy-model")' in card.text and "Toy integer weights." in card.text
    assert "toyquant (weights per layer as below" in card.text
