"""Issue 26, items 14, 15 and 19: the last raw or late failures are FairQuantErrors before any work."""

import pytest

import hf_fairquant.run.checks as checks
import hf_fairquant.run.runner as runner
from hf_fairquant import audit, explain, quantize
from hf_fairquant.errors import FairQuantError
from hf_fairquant.run import load_recipe, run
from tests.conftest import image_dataset, raw_text_dataset, tiny_distilbert, tiny_resnet, tiny_tokenizer
from tests.fail_early_fixtures import save_data, tiny_recipe, write_recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return save_data(tmp_path_factory.mktemp("data") / "d", ["a", "b"], ["a", "b"], n_train=24, n_test=12)


def _recipe(tmp_path, data, **sections):
    return load_recipe(write_recipe(tmp_path / "r.yaml", tiny_recipe(data, **sections)), output_dir=str(tmp_path / "out"))


def test_a_calibration_set_of_another_image_size_fails_before_any_pass():
    model = tiny_resnet()
    model.config.image_size = 8
    with pytest.raises(FairQuantError, match="expects 8×8 images .* data has 10×10"):
        audit(model, image_dataset(n=16, size=8), ["w8a8"], "group", image_dataset(n=16, size=10), progress=False)


def test_a_full_disk_and_a_read_only_parent_fail_before_any_work(tmp_path, data, monkeypatch):
    import shutil
    from collections import namedtuple

    monkeypatch.setattr(runner, "load_recipe_data", lambda *a, **k: pytest.fail("loaded data before the check"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(FairQuantError, match=r"only 1 MiB free on the disk of .*at least 64 MiB needed"):
        run(_recipe(tmp_path, data), echo=lambda *_: None)
    monkeypatch.undo()
    monkeypatch.setattr(runner, "load_recipe_data", lambda *a, **k: pytest.fail("loaded data before the check"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that can write anywhere")
        with pytest.raises(FairQuantError, match="is not writable"):
            checks.check_output_dir(locked / "out", overwrite=False)
    finally:
        locked.chmod(0o700)


def test_a_hub_model_without_network_is_refused_before_the_data_loads(tmp_path, data, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(runner, "load_recipe_data", lambda *a, **k: pytest.fail("loaded data before the model"))
    recipe = _recipe(tmp_path, data, model={"name_or_path": "someone/not-here-model", "config": None}, training=None)
    with pytest.raises(FairQuantError, match=r"model 'someone/not-here-model' is not a local folder, and loading it from "
                                             r"the Hub failed \(HF_HUB_OFFLINE is set\)"):
        run(recipe, echo=lambda *_: None)


def test_an_empty_test_split_and_a_huge_n_boot_fail_before_any_work(tmp_path, monkeypatch):
    from hf_fairquant.audit import AuditConfig

    with pytest.raises(FairQuantError, match="n_boot must be at most 100,000"):
        AuditConfig(n_boot=10**9)
    from datasets import DatasetDict

    from tests.fail_early_fixtures import image_split

    train = image_split(24, ["a", "b"])
    empty = tmp_path / "empty"
    DatasetDict({"train": train, "test": train.select([])}).save_to_disk(str(empty))
    monkeypatch.setattr(runner, "build_model", lambda *a, **k: pytest.fail("built a model before the data check"))
    with pytest.raises(FairQuantError, match=r"split\(s\) \['test'\] hold no rows"):
        run(_recipe(tmp_path, empty), echo=lambda *_: None)
    with pytest.raises(FairQuantError, match="split 'eval' is empty"):
        audit(tiny_resnet(), image_dataset(n=8).select([]), [], "group", progress=False)


def test_export_onnx_batches_unpadded_text_with_the_tokenizer(tmp_path):
    from hf_fairquant.quantization.onnx import export_onnx

    tokenizer = tiny_tokenizer()
    data = raw_text_dataset().map(lambda b: tokenizer(b["text"], truncation=True), batched=True, remove_columns=["text"])
    with pytest.raises(FairQuantError, match="DataCollatorWithPadding"):
        export_onnx(tiny_distilbert(), "w8", tmp_path / "no", data)
    result = export_onnx(tiny_distilbert(), "w8", tmp_path / "ok", data, processing_class=tokenizer)
    assert result.quantized_path.is_file() and result.fp32_max_abs_diff < 1e-3


def test_a_quantized_model_where_the_fp_one_is_expected_is_named(tmp_path):
    data = image_dataset(n=16)
    qmodel = quantize(tiny_resnet(), "w8")
    for call in (lambda: audit(qmodel, data, ["w4"], "group", progress=False),
                 lambda: explain(qmodel, "w4", data, "group", progress=False)):
        with pytest.raises(FairQuantError, match="needs a full-precision model, but this ResNetForImageClassification "
                                                 "is already quantized by quanto"):
            call()


def test_a_forward_without_logits_is_named():
    import torch

    class DictModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 10)

        def forward(self, pixel_values):
            return {"scores": self.linear(pixel_values.flatten(1))}

    with pytest.raises(FairQuantError, match="returns dict without `logits`"):
        audit(DictModel(), image_dataset(n=8), [], "group", progress=False)
