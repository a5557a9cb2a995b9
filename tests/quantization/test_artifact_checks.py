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
