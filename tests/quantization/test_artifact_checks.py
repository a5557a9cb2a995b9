"""Issue 14, item 3 (self-checking artifacts) and item 2's whole-folder re-save."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_fairquant import load_quantized, quantize, save_quantized
from hf_fairquant.errors import ArtifactError, FairQuantError
from hf_fairquant.quantization import artifact_checks as checks, serialization as ser
from hf_fairquant.quantization.backends import quanto
from tests.conftest import image_dataset, tiny_resnet
from tests.quantization.test_serialization import _logits, resign


@pytest.fixture
def saved(tmp_path):
    data = image_dataset(n=16)
    model = quantize(tiny_resnet(), "w4a8", data, calibration_size=16)
    return save_quantized(model, tmp_path / "q"), model, data


def _edit_map(folder, change):
    qmap = json.loads((folder / quanto.QMAP_NAME).read_text())
    name = next(k for k in qmap if k != checks.QMAP_CHECK_KEY)
    qmap[name].update(change)
    return qmap


@pytest.mark.parametrize("change", [{"weights": "qint2"}, {"activations": "none"}])
def test_an_edited_quantization_map_is_refused_naming_the_file(saved, change):
    folder, _, _ = saved
    (folder / quanto.QMAP_NAME).write_text(json.dumps(_edit_map(folder, change)))
    with pytest.raises(ArtifactError, match=r"quantization_map\.json differ\(s\) from what .*hf_fairquant\.json records"):
        load_quantized(folder)
    (folder / ser.META_NAME).unlink()  # without the file record, the map and the weights still check each other
    with pytest.raises(ArtifactError, match=r"quantization_map\.json does not match .*model\.safetensors"):
        load_quantized(folder)


def test_edited_weights_are_refused(saved):
    folder, _, _ = saved
    state = load_file(str(folder / quanto.WEIGHTS_NAME))
    key = next(k for k in state if k.endswith("._scale"))
    state[key] = state[key] * 2
    metadata = {checks.WEIGHTS_QMAP_HASH_KEY: checks.qmap_hash(json.loads((folder / quanto.QMAP_NAME).read_text()))}
    save_file(state, str(folder / quanto.WEIGHTS_NAME), metadata=metadata)
    with pytest.raises(ArtifactError, match=r"model\.safetensors differ\(s\) from what .*hf_fairquant\.json records"):
        load_quantized(folder)
    (folder / ser.META_NAME).unlink()
    with pytest.raises(ArtifactError, match=r"model\.safetensors does not match .*quantization_map\.json"):
        load_quantized(folder)


def test_bits_that_do_not_fit_the_stored_tensors_are_refused_even_with_matching_hashes(saved):
    folder, _, _ = saved
    resign(folder, qmap=_edit_map(folder, {"weights": "qint2"}))  # int4 tensors declared as int2
    with pytest.raises(ArtifactError, match=r"do not have the dtype/shape the quantization map's bits give: .*uint8"):
        load_quantized(folder)


def test_a_map_without_a_hash_and_a_damaged_map_are_refused(saved):
    folder, _, _ = saved
    (folder / ser.META_NAME).unlink()  # reach the map's own checks
    qmap = json.loads((folder / quanto.QMAP_NAME).read_text())
    del qmap[checks.QMAP_CHECK_KEY]
    (folder / quanto.QMAP_NAME).write_text(json.dumps(qmap))
    with pytest.raises(ArtifactError, match="no __hf_fairquant__.weights_sha256"):
        load_quantized(folder)
    (folder / quanto.QMAP_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match=r"quantization_map\.json is not valid JSON"):
        load_quantized(folder)


def test_resave_swaps_the_whole_folder_and_keeps_other_files(saved, tmp_path, monkeypatch):
    folder, model, data = saved
    (folder / "README.md").write_text("my card")
    other = quantize(tiny_resnet(), "w8", None)
    import safetensors.torch

    real_save_file = safetensors.torch.save_file

    def interrupted(*args, **kwargs):  # the new weights are written, then the process is stopped
        real_save_file(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", interrupted)  # what the quanto backend writes with
    with pytest.raises(KeyboardInterrupt):
        save_quantized(other, folder)
    assert torch.equal(_logits(load_quantized(folder), data), _logits(model, data))  # the old model, whole
    monkeypatch.setattr("safetensors.torch.save_file", real_save_file)
    save_quantized(other, folder)
    assert torch.equal(_logits(load_quantized(folder), data), _logits(other, data))
    assert (folder / "README.md").read_text() == "my card"
    assert [p.name for p in tmp_path.iterdir()] == ["q"]


@pytest.mark.parametrize("where", ["./no/such/folder", "{tmp}/missing", "not a repo id!"])
def test_a_missing_local_folder_is_an_artifact_error_without_the_hub(tmp_path, monkeypatch, where):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("asked the Hub"))
    with pytest.raises(FairQuantError, match="does not exist"):
        load_quantized(where.format(tmp=tmp_path))


def test_an_unreachable_hub_id_says_both_readings(monkeypatch):
    with pytest.raises(ArtifactError, match="is not a local folder, and loading it as a Hub repo failed"):
        load_quantized("nobody-h14/no-such-model")  # HF_HUB_OFFLINE=1 in tests


def test_saving_over_the_working_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FairQuantError, match="is \\(or contains\\) the working folder"):
        save_quantized(quantize(tiny_resnet(), "w8"), ".")
    assert list(tmp_path.iterdir()) == []


def test_torchao_artifacts_are_checked_against_the_file_record(tmp_path):
    from hf_fairquant import QuantRecipe
    from tests.conftest import tiny_vit

    recipe = QuantRecipe.parse({"preset": "w8", "exclude": ["vit.embeddings.*"], "backend": "torchao"})  # Linear only
    model = quantize(tiny_vit(), recipe)
    folder = save_quantized(model, tmp_path / "t")
    data = image_dataset(n=16, size=8)
    assert torch.equal(_logits(load_quantized(folder), data), _logits(model, data))  # intact: loads exactly
    config = json.loads((folder / "config.json").read_text())
    config["num_labels_note"] = "edited"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"config\.json differ\(s\) from what .*hf_fairquant\.json records"):
        load_quantized(folder)


# ---------------------------------------------------------------- issue 26: items 9, 10, 14, 17
def _torchao_folder(tmp_path):
    from tests.conftest import text_dataset, tiny_distilbert

    model = quantize(tiny_distilbert(), "w4@torchao")
    return save_quantized(model, tmp_path / "t"), model, text_dataset(n=8)


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last tensor's data
    path.write_bytes(bytes(data))


def test_a_torchao_folder_checks_itself_without_hf_fairquant_json(tmp_path):
    """Item 10: one flipped weight byte with hf_fairquant.json deleted loaded silently (logits off by 1e-3)."""
    folder, model, data = _torchao_folder(tmp_path)
    (folder / ser.META_NAME).unlink()
    assert torch.equal(_logits(load_quantized(folder), data), _logits(model, data))  # intact: loads exactly
    _flip_last_byte(folder / "model.safetensors")
    with pytest.raises(ArtifactError, match=r"model\.safetensors differs from what it recorded when it was saved"):
        load_quantized(folder)


@pytest.mark.parametrize("backend", ["quanto", "torchao"])
def test_a_truncated_weights_file_is_named(tmp_path, backend):
    """Item 14: a truncated safetensors file fails with an error naming the file, with or without the record."""
    if backend == "torchao":
        folder, _, _ = _torchao_folder(tmp_path)
    else:
        folder = save_quantized(quantize(tiny_resnet(), "w4"), tmp_path / "q")
    (folder / ser.META_NAME).unlink()
    weights = folder / quanto.WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=rf"{weights} is not a readable safetensors file .*truncated or damaged"):
        load_quantized(folder)


def test_an_unfrozen_quanto_model_is_refused_at_save_time(tmp_path):
    """Item 17: a QAT model saved unfrozen wrote a folder load_quantized then rejected ("missing keys …_data._data")."""
    from hf_fairquant.quantization import LayerQuant, apply_plan, freeze

    model = tiny_resnet()
    apply_plan(model, {"classifier.1": LayerQuant(4)})
    with pytest.raises(FairQuantError, match=r"not frozen: 1 module\(s\) still fake-quantize float weights .*freeze it first"):
        save_quantized(model, tmp_path / "q")
    assert not (tmp_path / "q").exists()
    freeze(model)
    save_quantized(model, tmp_path / "q")
    load_quantized(tmp_path / "q")


@pytest.mark.parametrize("name", ["config.json", quanto.QMAP_NAME, "pytorch_model.bin"])
def test_a_target_named_like_a_file_of_a_saved_model_is_refused(saved, name):
    """Item 9: save_quantized(q, folder / "config.json") turned that file into a folder."""
    folder, model, data = saved
    with pytest.raises(FairQuantError, match=rf"save_quantized writes a folder, but {folder / name} is (an existing file|named like a file)"):
        save_quantized(model, folder / name)
    assert torch.equal(_logits(load_quantized(folder), data), _logits(model, data))  # the model there still loads
