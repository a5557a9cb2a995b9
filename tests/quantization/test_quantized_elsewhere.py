"""Issue #22: models quantized elsewhere, in a fresh process, audited with no set-up; transformers'
quantization configs as recipes; pre-quantized checkpoints against their base; GPT-2's Conv1D;
errors before any work for what this machine cannot run.

Each library runs in a fresh interpreter (``subprocess``): the model is quantized the way users
do it (``from_pretrained(folder, quantization_config=...)`` or the library's own call) and only
then is hf_fairquant imported — no backend pre-loaded. The subprocess also counts the bits itself
from the library's own classes (over Linear/Conv weights, each once) for the parent to compare.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_fairquant import audit, effective_bits, load_quantized, quantize, save_quantized
from hf_fairquant.errors import FairQuantError, UnsupportedByBackendError
from hf_fairquant.quantization import (
    float_weights,
    layer_bits,
    parse_recipe,
    quantizer_of,
)
from tests.conftest import image_dataset, tiny_vit

ROOT = Path(__file__).resolve().parents[2]

_PRELUDE = r'''
import json, math, sys, tempfile
import numpy as np
import torch
torch.set_num_threads(1)
import transformers as tf
tf.logging.set_verbosity_error()
from datasets import Array3D, Dataset, Features, Value

TMP = tempfile.mkdtemp()
LIBS = ("bitsandbytes", "torchao", "optimum.quanto", "hqq")


def vit():
    torch.manual_seed(0)
    return tf.ViTForImageClassification(tf.ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=64,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=10)).eval()


def load(config, name="vit"):
    """The model as transformers builds it from a saved float folder and a quantization config."""
    model = vit()
    folder = f"{TMP}/{name}"
    model.save_pretrained(folder)
    return type(model).from_pretrained(folder, quantization_config=config).eval()


def data(n=48):
    rng = np.random.default_rng(0)
    features = Features(pixel_values=Array3D(shape=(1, 8, 8), dtype="float32"), labels=Value("int64"), group=Value("string"))
    return Dataset.from_dict({"pixel_values": rng.normal(size=(n, 1, 8, 8)).astype(np.float32),
                              "labels": rng.integers(0, 10, n), "group": ["a" if i % 3 else "b" for i in range(n)]},
                             features=features)


def direct_bits(model, bits_of):
    """numel-weighted mean over Linear/Conv weights (each once), bits from the library's classes."""
    num = den = 0
    for _, m in model.named_modules():
        r = bits_of(m)
        if r is not None:
            num += r[0] * r[1]
            den += r[1]
    return num / den


def plain(m):
    if type(m) in (torch.nn.Linear, torch.nn.Conv2d):
        return 32, m.weight.numel()
    return None


def report(models, bits_of):
    """Audit every model against a fresh FP ViT, importing hf_fairquant only now."""
    before = sorted(l for l in LIBS if l in sys.modules) + (["hf_fairquant"] if "hf_fairquant" in sys.modules else [])
    direct = {name: direct_bits(model, bits_of) for name, model in models.items()}
    import hf_fairquant
    from hf_fairquant import audit, effective_bits, model_size_bytes
    from hf_fairquant.quantization import layer_bits, quantizer_of
    result = audit(vit(), data(), [], "group", quantized_models=models, n_boot=0, progress=False)
    out = {"libs_before": before, "rows": {}}
    for row in result.quantized:
        model = models[row.name]
        out["rows"][row.name] = {
            "effective_bits": row.effective_bits, "storage_bits": row.storage_bits, "size_bytes": row.size_bytes,
            "quantization": row.quantization, "float_share": row.float_share, "flip_rate": row.metrics["flip_rate"],
            "backend": quantizer_of(model).name, "direct_bits": direct[row.name],
            "layer_bits": {n: (None if q is None else [q.weight_bits, q.activation_bits]) for n, q in layer_bits(model).items()},
            "again_bits": effective_bits(model), "again_bytes": model_size_bytes(model),
        }
    print("RESULT " + json.dumps(out, default=str))
'''


def _run(body: str, timeout: float = 600) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(body)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _needs(*packages: str):
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {missing} (pip install hf-fairquant[quantizers])")


def _check_rows(result: dict, backend: str, library: str) -> None:
    for name, row in result["rows"].items():
        assert row["backend"] == backend, name
        assert library in row["quantization"], (name, row["quantization"])
        assert row["effective_bits"] == pytest.approx(row["direct_bits"], rel=1e-12), name
        assert row["effective_bits"] == row["again_bits"] and row["size_bytes"] == row["again_bytes"], name
        assert row["storage_bits"] >= row["effective_bits"] and 0 < row["size_bytes"], name
        assert any(v is not None for v in row["layer_bits"].values()), name


# ----------------------------------------------------------------------------- item 2: recognised in a fresh process
@pytest.mark.slow
@_needs("torchao")
def test_torchao_configs_and_quantize_are_recognised_and_audited():
    result = _run('''
        from torchao.quantization import (Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig,
            IntxWeightOnlyConfig, PerGroup, quantize_, Int8Tensor, IntxUnpackedToInt8Tensor)
        intx = lambda d: IntxWeightOnlyConfig(weight_dtype=d, granularity=PerGroup(32))
        direct = vit()
        quantize_(direct, Int8WeightOnlyConfig())
        models = {"int8": load(tf.TorchAoConfig(Int8WeightOnlyConfig())),
                  "int8-dynamic": load(tf.TorchAoConfig(Int8DynamicActivationInt8WeightConfig())),
                  "int4": load(tf.TorchAoConfig(intx(torch.int4))), "int2": load(tf.TorchAoConfig(intx(torch.int2))),
                  "quantize_": direct}
        def bits_of(m):
            w = m.__dict__.get("_parameters", {}).get("weight")
            if isinstance(w, Int8Tensor):
                return 8, w.numel()
            if isinstance(w, IntxUnpackedToInt8Tensor):
                return {torch.int4: 4, torch.int2: 2}[w.target_dtype], w.numel()
            return plain(m)
        report(models, bits_of)
    ''')
    assert "torchao" in result["libs_before"] and "hf_fairquant" not in result["libs_before"]  # no set-up
    _check_rows(result, "torchao", "torchao")
    rows = result["rows"]
    assert rows["int8-dynamic"]["layer_bits"]["vit.layers.0.attention.q_proj"] == [8, 8]
    assert rows["int4"]["layer_bits"]["vit.layers.0.mlp.fc1"] == [4, None]
    assert rows["int2"]["layer_bits"]["classifier"] == [2, None]
    assert rows["int8"]["layer_bits"]["vit.embeddings.patch_embeddings.projection"] is None  # Conv2d stays float
    assert rows["int4"]["effective_bits"] < rows["int8"]["effective_bits"] < 8.2


@pytest.mark.slow
@_needs("bitsandbytes")
def test_bitsandbytes_configs_are_recognised_and_audited():
    result = _run('''
        import bitsandbytes as bnb
        skip = {"llm_int8_skip_modules": ["classifier"]}  # 10 outputs: the CPU 4-bit kernel needs a multiple of 32
        models = {"int8": load(tf.BitsAndBytesConfig(load_in_8bit=True)),
                  "nf4": load(tf.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", **skip)),
                  "fp4": load(tf.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", **skip))}
        def bits_of(m):
            if isinstance(m, bnb.nn.Linear8bitLt):
                return 8, m.weight.numel()
            if isinstance(m, bnb.nn.Linear4bit):
                return 4, math.prod(m.weight.quant_state.shape)
            return plain(m)
        report(models, bits_of)
    ''')
    assert "hf_fairquant" not in result["libs_before"]
    _check_rows(result, "transformers", "bitsandbytes")
    rows = result["rows"]
    assert rows["int8"]["layer_bits"]["classifier"] == [8, 8]  # LLM.int8: activations quantized per call
    assert rows["nf4"]["layer_bits"]["classifier"] is None and rows["nf4"]["layer_bits"]["vit.layers.0.mlp.fc2"] == [4, None]
    # the 4-bit quantization state (absmax per block of 64, the code table) shows in the stored bits
    assert rows["nf4"]["storage_bits"] > rows["nf4"]["effective_bits"] + 0.25
    assert "BitsAndBytesConfig" in rows["nf4"]["quantization"]


@pytest.mark.slow
@_needs("optimum.quanto", "hqq")
def test_quanto_hqq_and_torch_ao_are_recognised_and_audited():
    result = _run('''
        from optimum.quanto import QModuleMixin, freeze, qint8, quantize
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear
        direct = vit()
        quantize(direct, weights=qint8)
        freeze(direct)
        dynamic = torch.ao.quantization.quantize_dynamic(vit(), {torch.nn.Linear}, dtype=torch.qint8)
        hqq = vit()
        for name, m in list(hqq.named_modules()):
            if type(m) is torch.nn.Linear:
                hqq.set_submodule(name, HQQLinear(m, BaseQuantizeConfig(nbits=4, group_size=32), compute_dtype=torch.float32,
                                                  device="cpu"))
        models = {"quanto-config": load(tf.QuantoConfig(weights="int8")), "quanto": direct, "torch.ao": dynamic, "hqq": hqq}
        def bits_of(m):
            if isinstance(m, QModuleMixin) and m.weight_qtype is not None:
                return m.weight_qtype.bits, m.weight.numel()
            if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
                return 8, m.weight().numel()
            if isinstance(m, HQQLinear):
                return m.meta["nbits"], math.prod(m.meta["shape"])
            return plain(m)
        report(models, bits_of)
    ''')
    rows = result["rows"]
    for name, row in rows.items():
        assert row["effective_bits"] == pytest.approx(row["direct_bits"], rel=1e-12), name
    assert rows["quanto-config"]["backend"] == "quanto" == rows["quanto"]["backend"]
    assert rows["torch.ao"]["backend"] == "torch.ao" and rows["torch.ao"]["layer_bits"]["classifier"] == [8, 8]
    assert rows["hqq"]["backend"] == "hqq" and rows["hqq"]["layer_bits"]["vit.layers.0.mlp.fc1"] == [4, None]
    assert rows["hqq"]["effective_bits"] < 4.2  # every Linear at 4 bits; the patch-embedding Conv2d float
    for name in ("torch.ao", "hqq"):
        assert rows[name]["size_bytes"] < 0.6 * 4 * 100_000, name  # counted from the layers, not a float state dict


def test_a_float_model_passed_as_quantized_names_what_was_looked_for():
    fp, data = tiny_vit(), image_dataset(16)
    with pytest.raises(FairQuantError, match=r"quantized_models\['q'\] \(ViTForImageClassification\) holds no quantized "
                                             r"layer: looked for the quantized layers of bitsandbytes, hqq, optimum-quanto"):
        audit(fp, data, [], "group", quantized_models={"q": tiny_vit()}, n_boot=0, progress=False)


# ----------------------------------------------------------------------------- item 1: configs as recipes
class _NoForward:
    """Fails the test if the model runs a forward pass (an error must come before any work)."""

    def __init__(self, model):
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        raise AssertionError("a forward pass ran before the error")


@_needs("bitsandbytes", "torchao")
def test_transformers_configs_are_recipes_in_python():
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import BitsAndBytesConfig, TorchAoConfig

    fp, data = tiny_vit(), image_dataset(48)
    before = {k: v.clone() for k, v in fp.state_dict().items()}
    nf4 = {"transformers": "BitsAndBytesConfig", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
           "llm_int8_skip_modules": ["classifier"]}
    report = audit(fp, data, [TorchAoConfig(Int8WeightOnlyConfig()), BitsAndBytesConfig(load_in_8bit=True), nf4, "w4a8"],
                   "group", calibration_dataset=data, n_boot=0, progress=False)
    names = [r.name for r in report.quantized]
    assert names == ["torchao-int8", "bnb-int8", "bnb-nf4", "bnb-nf4 reloaded", "W4A8"]
    rows = {r.name: r for r in report.quantized}
    assert all(torch.equal(before[k], v) for k, v in fp.state_dict().items())  # the FP model is left as it was
    assert rows["bnb-int8"].recipe["library"] == "bitsandbytes" and rows["bnb-int8"].recipe["transformers"] == "BitsAndBytesConfig"
    assert "TorchAoConfig(Int8WeightOnlyConfig())" in rows["torchao-int8"].quantization
    assert 4 < rows["bnb-nf4"].effective_bits < 5 and rows["bnb-nf4"].storage_bits > rows["bnb-nf4"].effective_bits
    # torchao int8 and bnb int8 round-trip exactly: no extra row; size = the saved folder's bytes
    assert report.round_trips["torchao-int8"]["identical"] and report.round_trips["bnb-int8"]["identical"]
    assert rows["bnb-int8"].size_bytes == report.round_trips["bnb-int8"]["artifact_bytes"]
    # NF4 after a CPU forward: the saved artifact is not the evaluated model (docs/quantizers.md)
    trip = report.round_trips["bnb-nf4"]
    assert trip["identical"] is False and trip["reloaded_row"] == "bnb-nf4 reloaded" and trip["max_loss_change"] > 0
    assert 0 <= trip["flip_rate"] <= 1
    text = report.to_markdown()
    assert "**Save → reload:** bnb-nf4: the reloaded artifact differs" in text
    assert "bnb-int8 = bitsandbytes via transformers BitsAndBytesConfig(load_in_8bit=True)" in text
    again = type(report).from_json(report.to_json())  # the recipe reads back from results.json
    assert parse_recipe(again.result("bnb-nf4").recipe).to_dict() == rows["bnb-nf4"].recipe

    built = quantize(fp, BitsAndBytesConfig(load_in_8bit=True))  # the verb: a new model, the FP one untouched
    assert built is not fp and quantizer_of(built).name == "transformers" and quantizer_of(fp) is None
    assert layer_bits(built)["vit.layers.0.mlp.fc1"].weight_bits == 8


@pytest.mark.parametrize("recipe, model, message", [
    ("hqq-int4", "vit", r"transformers 5\.\d+\.\d+ cannot apply it: its HqqHfQuantizer has no get_quantize_ops"),
    ({"transformers": "TorchAoConfig", "quant_type": "Int4WeightOnlyConfig"}, "vit",
     r"vit\.layers\.0\.mlp\.fc2 \(128→64\).*ImportError: Requires mslk >= 1\.0\.0 — it needs a kernel package"),
    ("bnb-nf4", "vit", r"classifier \(64→10\): AssertionError: N must be divisible by block_n — it needs out_features "
                       r"divisible by 32.*llm_int8_skip_modules=\['classifier'\]"),
    ("torchao-int8", "gpt2", r"quantizes no layer of GPT2ForSequenceClassification.*8 Conv1D \(transformer\.h\.0\.attn\.c_attn"),
    ("quanto-int8", "gpt2", r"quantizes no layer of GPT2ForSequenceClassification.*Conv1D"),
])
def test_what_this_machine_cannot_run_fails_before_any_work(recipe, model, message):
    if importlib.util.find_spec("bitsandbytes") is None or importlib.util.find_spec("optimum.quanto") is None:
        pytest.skip("needs the quantizers extra")
    fp = tiny_vit() if model == "vit" else _gpt2()
    data = image_dataset(8) if model == "vit" else _token_dataset()
    _NoForward(fp)
    with pytest.raises(UnsupportedByBackendError, match=message):
        audit(fp, data, [recipe], "group", n_boot=0, progress=False)


def _gpt2(num_labels: int = 3):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64, num_labels=num_labels,
                        pad_token_id=0, bos_token_id=1, eos_token_id=1)
    return GPT2ForSequenceClassification(config).eval()


def _token_dataset(n: int = 16, length: int = 12):
    from datasets import Dataset

    rng = np.random.default_rng(0)
    return Dataset.from_dict({"input_ids": rng.integers(2, 128, (n, length)).tolist(),
                              "attention_mask": np.ones((n, length), dtype=np.int64).tolist(),
                              "labels": rng.integers(0, 3, n).tolist(), "group": ["x" if i % 4 else "y" for i in range(n)]})


# ----------------------------------------------------------------------------- item 4: Conv1D
def _direct_linear_conv1d_bits(fp: torch.nn.Module, bits: dict) -> float:
    """The mean over every Linear and Conv1D weight of the FP model (each once), by hand."""
    from transformers.pytorch_utils import Conv1D

    num = den = 0
    for name, module in fp.named_modules():
        if type(module) in (torch.nn.Linear, Conv1D):
            b = bits[name].weight_bits if bits.get(name) is not None else 32
            num += b * module.weight.numel()
            den += module.weight.numel()
    return num / den


@pytest.mark.parametrize("recipe", ["w4", "w8@torchao", {"preset": "w4", "exclude": ["transformer.h.1.*"], "name": "half"}])
def test_gpt2_conv1d_is_quantized_like_a_linear(recipe, tmp_path):
    fp = _gpt2()
    ids = torch.randint(2, 128, (4, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = fp(input_ids=ids).logits
    q = quantize(_gpt2(), recipe)
    bits = layer_bits(q)
    conv1d = [n for n in bits if ".attn.c_" in n or ".mlp.c_" in n]
    assert len(conv1d) == 8 and "score" in bits  # every Conv1D is counted (89 % of GPT-2's matmul weights)
    assert effective_bits(q) == pytest.approx(_direct_linear_conv1d_bits(fp, bits), rel=1e-12)
    with torch.no_grad():
        logits = q(input_ids=ids).logits
    assert (logits - reference).abs().max() < 0.5  # the same layer, transposed: close to FP
    share, floats = float_weights(q)
    if recipe == "w4":
        assert all(bits[n].weight_bits == 4 for n in conv1d) and share == 0
        save_quantized(q, tmp_path / "q")  # quanto's folder: Conv1D rebuilt as the same quantized Linear on load
        with torch.no_grad():
            assert torch.equal(load_quantized(tmp_path / "q")(input_ids=ids).logits, logits)
    elif recipe == "w8@torchao":
        assert all(bits[n].weight_bits == 8 for n in conv1d)
        with pytest.raises(UnsupportedByBackendError, match="plain transformers, which builds transformers' Conv1D"):
            save_quantized(q, tmp_path / "refused")
        assert not (tmp_path / "refused").exists()
    else:
        assert share > 0.05 and all(n.startswith("transformer.h.1.") for n in floats)


def test_a_plan_that_leaves_most_weights_float_is_reported(tmp_path):
    fp, data = tiny_vit(), image_dataset(32)
    report = audit(fp, data, [{"preset": "w8", "exclude": ["vit.layers.1.*"], "name": "w8-half"}], "group",
                   n_boot=0, progress=False)
    row = report.quantized[0]
    assert 0.4 < row.float_share < 0.6 and "vit.layers.1.mlp.fc1" in row.float_layers
    assert row.effective_bits == pytest.approx(effective_bits(quantize(tiny_vit(), {"preset": "w8", "exclude": ["vit.layers.1.*"],
                                                                                       "name": "w8-half"})))
    text = report.to_markdown()
    assert f"**Float weights:** {row.name} leaves {100 * row.float_share:.1f} % of its weights float" in text


@_needs("bitsandbytes")
def test_bitsandbytes_config_quantizes_gpt2_conv1d():
    fp, data = _gpt2(), _token_dataset()
    report = audit(fp, data, ["bnb-int8"], "group", n_boot=0, progress=False)
    row = report.quantized[0]
    # every Conv1D → Linear8bitLt; transformers keeps the last module (the score head) float
    assert row.float_layers == {"score": "Linear"} and row.float_share < 0.01 and 8 < row.effective_bits < 8.1
    assert report.round_trips["bnb-int8"]["identical"]


@_needs("optimum.quanto", "torchao")
def test_quanto_config_and_torchao_dynamic_are_recipes_too():
    fp, data = tiny_vit(), image_dataset(32)
    report = audit(fp, data, ["quanto-int8", "torchao-int8-dynamic", "torchao-int2"], "group", n_boot=0, progress=False)
    rows = {r.name: r for r in report.quantized}
    assert list(rows) == ["quanto-int8", "torchao-int8-dynamic", "torchao-int2"]
    assert "optimum-quanto via transformers QuantoConfig(weights='int8'" in rows["quanto-int8"].quantization
    assert "not serializable" in report.round_trips["quanto-int8"]["error"]  # transformers 5 cannot save it: said, no row
    assert report.round_trips["torchao-int8-dynamic"]["identical"] and report.round_trips["torchao-int2"]["identical"]
    assert 2 < rows["torchao-int2"].effective_bits < 2.2 and rows["torchao-int2"].storage_bits > 9  # stored unpacked
