import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_fairquant import GroupSpec, QuantRecipe, load_quantized, quantize, save_quantized
from hf_fairquant.batching import iterate_batches


def _logits(model, dataset):
    with torch.no_grad():
        return torch.cat([model(**inputs).logits for inputs in iterate_batches(model, dataset, 16)])


@pytest.mark.parametrize("preset", ["w8a8", "w4", "w2a8"])
def test_save_load_gives_identical_logits(model_case, preset, tmp_path):
    name, make_model, data = model_case
    model = quantize(make_model(), preset, data, group_spec=GroupSpec("group"), calibration_size=32)
    save_quantized(model, tmp_path / "q", recipe=QuantRecipe.parse(preset))
    reloaded = load_quantized(tmp_path / "q")
    assert type(reloaded) is type(model)
    assert torch.equal(_logits(model, data), _logits(reloaded, data))


def test_quantization_changes_the_logits(tmp_path):
    from tests.conftest import image_dataset, tiny_resnet

    data = image_dataset()
    fp = _logits(tiny_resnet(), data)
    q = _logits(quantize(tiny_resnet(), "w2a8", data), data)
    assert not torch.allclose(fp, q)


def _saved(tmp_path):
    from tests.conftest import image_dataset, tiny_resnet

    model = quantize(tiny_resnet(), "w4", image_dataset())
    return save_quantized(model, tmp_path / "q")


def resign(folder, state=None, qmap=None):
    """Rewrite a saved folder with edited tensors/map and matching hashes: what a consistent but
    wrong save would look like, so the layout checks behind the hash checks are reached."""
    from hf_fairquant.quantization import artifact_checks as checks, serialization as ser
    from hf_fairquant.quantization.backends import quanto

    state = load_file(str(folder / quanto.WEIGHTS_NAME)) if state is None else state
    qmap = json.loads((folder / quanto.QMAP_NAME).read_text()) if qmap is None else qmap
    qmap[checks.QMAP_CHECK_KEY] = {"weights_sha256": checks.weights_hash(state)}
    (folder / quanto.QMAP_NAME).write_text(json.dumps(qmap))
    save_file(state, str(folder / quanto.WEIGHTS_NAME), metadata={checks.WEIGHTS_QMAP_HASH_KEY: checks.qmap_hash(qmap)})
    meta = json.loads((folder / ser.META_NAME).read_text())
    meta["files_sha256"] = checks.file_hashes(folder, list(meta["files_sha256"]))
    (folder / ser.META_NAME).write_text(json.dumps(meta))


def test_missing_key_raises(tmp_path):
    folder = _saved(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    key = next(k for k in state if k.endswith("._scale"))
    del state[key]
    resign(folder, state)
    with pytest.raises(ValueError, match="missing keys.*" + key.replace(".", r"\.")):
        load_quantized(folder)


def test_unexpected_key_raises(tmp_path):
    folder = _saved(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    state["classifier.extra"] = torch.zeros(1)
    resign(folder, state)
    with pytest.raises(ValueError, match=r"unexpected keys \['classifier\.extra'\]"):
        load_quantized(folder)


def test_quantization_map_must_fit_the_model(tmp_path):
    folder = _saved(tmp_path)
    qmap = json.loads((folder / "quantization_map.json").read_text())
    qmap["no.such.module"] = {"weights": "qint4", "activations": "none"}
    resign(folder, qmap=qmap)
    with pytest.raises(ValueError, match="no.such.module"):
        load_quantized(folder)


def test_not_a_quantized_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_quantized(tmp_path / "empty")


def test_failed_save_leaves_previous_folder_intact(tmp_path, monkeypatch):
    folder = _saved(tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    from tests.conftest import tiny_resnet

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)  # what the quanto backend writes with
    with pytest.raises(OSError, match="disk full"):
        save_quantized(quantize(tiny_resnet(), "w8"), folder)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["q"]  # no temp folder left behind
    load_quantized(folder)


def test_save_rejects_a_float_model(tmp_path):
    from tests.conftest import tiny_resnet

    with pytest.raises(ValueError, match="expects a quantized model"):
        save_quantized(tiny_resnet(), tmp_path / "x")
