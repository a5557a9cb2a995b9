"""hf_fairquant.quantization.recognise on models quantized elsewhere.

Each quantizer that runs on this CPU is run in a fresh interpreter (``subprocess``): the model is
built from a tiny config, saved, reloaded with ``from_pretrained(folder, quantization_config=...)``
(or quantized by the library directly), and only then is the recogniser imported — no
hf_fairquant set-up before. The subprocess also counts the bits itself, from the library's own
classes and attributes, and reports which quantization libraries were loaded before and after
recognition (recognising must import none).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hf_fairquant.errors import FairQuantError
from hf_fairquant.quantization.recognise import LayerInfo, declared_quantization, describe_layers, effective_bits, quantized_by

ROOT = Path(__file__).resolve().parents[2]

_PRELUDE = r'''
import json, math, sys, tempfile
import torch
torch.set_num_threads(1)
import transformers as tf
tf.logging.set_verbosity_error()
from transformers.pytorch_utils import Conv1D

TMP = tempfile.mkdtemp()
FLOAT = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv2d, Conv1D)
LIBS = ("bitsandbytes", "torchao", "optimum.quanto", "hqq")


def tiny(name):
    torch.manual_seed(0)
    if name == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).eval()
    if name == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64)).eval()
    if name == "bert":
        return tf.BertForSequenceClassification(tf.BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=128, max_position_embeddings=64, num_labels=3)).eval()
    if name == "vit":
        return tf.ViTForImageClassification(tf.ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=64,
            num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=10)).eval()
    raise ValueError(name)


def load(name, config):
    """The model as transformers builds it from a saved float folder and a quantization config."""
    model = tiny(name)
    folder = f"{TMP}/{name}"
    model.save_pretrained(folder)
    return type(model).from_pretrained(folder, quantization_config=config).eval()


def direct_count(model, bits_of):
    """numel-weighted mean of bits_of(module) -> (bits, numel) | None, each weight once."""
    seen, num, den = set(), 0.0, 0
    for _, m in model.named_modules():
        r = bits_of(m)
        if r is None:
            continue
        w = m.__dict__.get("_parameters", {}).get("weight")
        if w is not None:
            if id(w) in seen:
                continue
            seen.add(id(w))
        num += r[0] * r[1]
        den += r[1]
    return num / den


def float_bits(m):
    if type(m) in FLOAT:
        return 32, m.weight.numel()
    return None


def libs_loaded():
    return sorted(l for l in LIBS if l in sys.modules)


def report(models, bits_of):
    """Recognise each model (importing the recogniser only now) and print one JSON line."""
    before = libs_loaded()
    from hf_fairquant.quantization.recognise import declared_quantization, describe_layers, effective_bits, quantized_by
    out = {"libs_before": before, "models": {}}
    for name, model in models.items():
        layers = describe_layers(model)
        out["models"][name] = {
            "quantized_by": quantized_by(model),
            "declared": declared_quantization(model),
            "effective_bits": effective_bits(model),
            "effective_storage_bits": effective_bits(model, count_state=True),
            "layers": {k: vars(v) for k, v in layers.items()},
        }
    out["libs_after"] = libs_loaded()  # recognising imported nothing
    for name, model in models.items():  # the direct count may import the library's classes
        out["models"][name]["direct_bits"] = direct_count(model, bits_of)
    print("RESULT " + json.dumps(out, default=str))
'''


def _run(body: str, timeout: float = 600) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(body)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    for line in proc.stdout.splitlines():  # extra facts the body printed as RESULT_<KEY> {json}
        if line.startswith("RESULT_"):
            key, _, value = line.partition(" ")
            result[key[len("RESULT_"):].lower()] = json.loads(value)
    return result


def _needs(*packages: str):
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {missing} (pip install hf-fairquant[quantizers])")


def _check_common(result: dict) -> None:
    assert result["libs_after"] == result["libs_before"], "recognising a model imported a quantization library"
    for name, m in result["models"].items():
        assert m["effective_bits"] == pytest.approx(m["direct_bits"], rel=1e-12), name
        for layer, info in m["layers"].items():
            assert info["numel"] > 0 and info["bytes"] > 0, (name, layer)


GPT2_CONV1D = ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"]


# ----------------------------------------------------------------------------- transformers configs
@_needs("torchao")
def test_torchao_config_int8_weight_only_and_dynamic():
    result = _run('''
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig
        from torchao.quantization import Int8Tensor
        wo = lambda: tf.TorchAoConfig(Int8WeightOnlyConfig())
        models = {"llama": load("llama", wo()), "vit": load("vit", wo()), "gpt2": load("gpt2", wo()),
                  "bert_dyn": load("bert", tf.TorchAoConfig(Int8DynamicActivationInt8WeightConfig()))}
        def bits_of(m):
            w = m.__dict__.get("_parameters", {}).get("weight")
            if isinstance(w, Int8Tensor):
                return 8, w.numel()
            return float_bits(m)
        report(models, bits_of)
    ''')
    _check_common(result)
    llama, vit, gpt2, bert = (result["models"][k] for k in ("llama", "vit", "gpt2", "bert_dyn"))
    assert llama["quantized_by"] == ["torchao"] and llama["declared"]["library"] == "torchao"
    q = llama["layers"]["model.layers.0.self_attn.q_proj"]
    assert (q["kind"], q["library"], q["weight_bits"], q["activation_bits"], q["weight_format"]) == ("Linear", "torchao", 8.0, None, "Int8Tensor")
    assert q["numel"] == 64 * 64 and q["bytes"] == 64 * 64 + 64 * 4 + 64  # int8 + float32 row scale + int8 zero point
    assert llama["layers"]["lm_head"]["library"] is None  # transformers keeps the output embedding float
    assert llama["layers"]["model.embed_tokens"]["weight_bits"] == 32.0
    # ViT: the patch-embedding Conv2d stays float and is counted
    patch = vit["layers"]["vit.embeddings.patch_embeddings.projection"]
    assert (patch["kind"], patch["library"], patch["weight_bits"]) == ("Conv2d", None, 32.0)
    # int8 dynamic: activations quantized per call
    dq = bert["layers"]["bert.encoder.layer.0.attention.self.query"]
    assert (dq["weight_bits"], dq["activation_bits"], dq["activation_mode"]) == (8.0, 8, "dynamic")
    # GPT-2: TorchAoConfig quantizes no Conv1D (and keeps the tied lm_head float): nothing quantized,
    # although the config claims torchao
    assert gpt2["quantized_by"] == [] and gpt2["declared"]["library"] == "torchao"
    assert gpt2["effective_bits"] == 32.0
    for name in GPT2_CONV1D:
        assert gpt2["layers"][name]["kind"] == "Conv1D" and gpt2["layers"][name]["library"] is None
    assert gpt2["layers"]["lm_head"]["tied_to"] == "transformer.wte"


@_needs("torchao")
def test_torchao_config_intx_int4_int2_and_float8():
    result = _run('''
        from torchao.quantization import Float8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup
        from torchao.quantization import Float8Tensor, IntxUnpackedToInt8Tensor
        cfg = lambda d: tf.TorchAoConfig(IntxWeightOnlyConfig(weight_dtype=d, granularity=PerGroup(32)))
        models = {"int4": load("llama", cfg(torch.int4)), "int2": load("bert", cfg(torch.int2)),
                  "float8": load("vit", tf.TorchAoConfig(Float8WeightOnlyConfig()))}
        def bits_of(m):
            w = m.__dict__.get("_parameters", {}).get("weight")
            if isinstance(w, IntxUnpackedToInt8Tensor):
                return {torch.int4: 4, torch.int2: 2}[w.target_dtype], w.numel()
            if isinstance(w, Float8Tensor):
                return 8, w.numel()
            return float_bits(m)
        report(models, bits_of)
    ''')
    _check_common(result)
    q4 = result["models"]["int4"]["layers"]["model.layers.0.mlp.down_proj"]
    assert (q4["weight_bits"], q4["weight_format"], q4["numel"]) == (4.0, "IntxUnpackedToInt8Tensor", 64 * 128)
    # stored unpacked: one int8 per weight, plus a float32 scale and an int8 zero point per group of 32
    assert q4["bytes"] == 64 * 128 + (64 * 4) * 4 + (64 * 4)
    q2 = result["models"]["int2"]["layers"]["bert.encoder.layer.0.intermediate.dense"]
    assert q2["weight_bits"] == 2.0 and q2["library"] == "torchao"
    assert result["models"]["int2"]["layers"]["classifier"]["weight_bits"] == 2.0
    f8 = result["models"]["float8"]["layers"]["vit.layers.0.attention.q_proj"]
    assert (f8["weight_bits"], f8["weight_format"], f8["activation_bits"]) == (8.0, "Float8Tensor", None)
    assert f8["bytes"] == 64 * 64 + 64 * 4  # float8 weights + a float32 scale per row


@_needs("torchao")
def test_torchao_quantize_directly_including_conv1d():
    result = _run('''
        from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup, quantize_
        from torchao.quantization import Int8Tensor, IntxUnpackedToInt8Tensor
        vit = tiny("vit")
        quantize_(vit, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32)))
        gpt2 = tiny("gpt2")  # asked for Conv1D by type: weights quantized (its forward then fails: addmm)
        quantize_(gpt2, Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: isinstance(m, (torch.nn.Linear, Conv1D)))
        def bits_of(m):
            w = m.__dict__.get("_parameters", {}).get("weight")
            if isinstance(w, Int8Tensor):
                return 8, w.numel()
            if isinstance(w, IntxUnpackedToInt8Tensor):
                return 4, w.numel()
            return float_bits(m)
        report({"vit": vit, "gpt2": gpt2}, bits_of)
    ''')
    _check_common(result)
    vit, gpt2 = result["models"]["vit"], result["models"]["gpt2"]
    assert vit["quantized_by"] == ["torchao"] and vit["declared"] is None
    assert vit["layers"]["classifier"]["weight_bits"] == 4.0  # quantize_ keeps nothing float but the Conv2d
    assert vit["layers"]["vit.embeddings.patch_embeddings.projection"]["library"] is None
    for name in GPT2_CONV1D:
        info = gpt2["layers"][name]
        assert (info["kind"], info["library"], info["weight_bits"]) == ("Conv1D", "torchao", 8.0)
    assert gpt2["layers"]["transformer.h.0.attn.c_attn"]["numel"] == 64 * 192
    # quantize_ replaced lm_head's weight: no longer tied to wte
    assert gpt2["layers"]["lm_head"]["tied_to"] is None and gpt2["layers"]["lm_head"]["library"] == "torchao"


@_needs("bitsandbytes")
def test_bitsandbytes_8bit_quantizes_gpt2_conv1d():
    result = _run('''
        import bitsandbytes as bnb
        cfg = lambda: tf.BitsAndBytesConfig(load_in_8bit=True)
        gpt2, llama = load("gpt2", cfg()), load("llama", cfg())
        ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            llama(input_ids=ids)  # the first forward moves the row scales from weight.SCB to module.state
        def bits_of(m):
            if isinstance(m, bnb.nn.Linear8bitLt):
                return 8, m.weight.numel()
            return float_bits(m)
        report({"gpt2": gpt2, "llama": llama}, bits_of)
    ''')
    _check_common(result)
    gpt2, llama = result["models"]["gpt2"], result["models"]["llama"]
    assert gpt2["quantized_by"] == ["bitsandbytes"] == llama["quantized_by"]
    for name in GPT2_CONV1D:  # transformers' bnb integration converts Conv1D (transposing the weight)
        info = gpt2["layers"][name]
        assert (info["kind"], info["library"], info["weight_bits"], info["activation_bits"], info["activation_mode"]) == (
            "Linear8bitLt", "bitsandbytes", 8.0, 8, "dynamic")
    c_attn = gpt2["layers"]["transformer.h.0.attn.c_attn"]
    assert c_attn["numel"] == 64 * 192 and c_attn["bytes"] == 64 * 192 + 192 * 4  # int8 + float32 row scales
    q = llama["layers"]["model.layers.0.self_attn.q_proj"]  # after a forward: scales read from module.state
    assert q["bytes"] == 64 * 64 + 64 * 4
    assert gpt2["layers"]["lm_head"]["library"] is None and gpt2["layers"]["lm_head"]["tied_to"] == "transformer.wte"


@_needs("bitsandbytes")
def test_bitsandbytes_4bit_nf4_fp4_count_the_quant_state():
    result = _run('''
        import bitsandbytes as bnb
        cfg = lambda t: tf.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=t)
        nf4, fp4 = load("gpt2", cfg("nf4")), load("llama", cfg("fp4"))
        ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            fp4(input_ids=ids)  # on an AVX512-BF16 CPU this repacks the weights (bfloat16 absmax)
        expect_bytes = {}
        for tag, model in (("nf4", nf4), ("fp4", fp4)):
            for name, m in model.named_modules():
                if isinstance(m, bnb.nn.Linear4bit):
                    qs = m.weight.quant_state
                    expect_bytes[f"{tag}:{name}"] = (m.weight.data.numel() * m.weight.data.element_size()
                        + qs.absmax.numel() * qs.absmax.element_size() + qs.code.numel() * qs.code.element_size())
        print("RESULT_BYTES " + json.dumps(expect_bytes))
        def bits_of(m):
            if isinstance(m, bnb.nn.Linear4bit):
                return 4, math.prod(m.weight.quant_state.shape)
            return float_bits(m)
        report({"nf4": nf4, "fp4": fp4}, bits_of)
    ''')
    _check_common(result)
    nf4, fp4 = result["models"]["nf4"], result["models"]["fp4"]
    for name in GPT2_CONV1D:
        info = nf4["layers"][name]
        assert (info["kind"], info["library"], info["weight_bits"], info["activation_bits"]) == ("Linear4bit", "bitsandbytes", 4.0, None)
        assert info["weight_format"].startswith("Params4bit(nf4, blocksize 64")
    assert nf4["layers"]["transformer.h.0.attn.c_attn"]["numel"] == 64 * 192
    assert fp4["layers"]["model.layers.0.mlp.up_proj"]["weight_format"].startswith("Params4bit(fp4")
    # bytes: packed 4-bit data + absmax per block of 64 + the 16-entry code table
    q = nf4["layers"]["transformer.h.0.attn.c_attn"]
    assert q["bytes"] == 64 * 192 // 2 + (64 * 192 // 64) * 4 + 16 * 4
    # after a forward (fp4 Llama) and before (nf4 GPT-2): the bytes the tensors hold
    for key, expected in result["bytes"].items():
        tag, _, name = key.partition(":")
        assert result["models"][tag]["layers"][name]["bytes"] == expected, key
    # the quantization state shows in storage bits, not in the nominal bits
    assert nf4["effective_storage_bits"] > nf4["effective_bits"]


@_needs("bitsandbytes")
def test_bitsandbytes_4bit_double_quant_bytes_match_the_tensors():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    body = '''
        import bitsandbytes as bnb
        model = load("llama", tf.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True))
        from hf_fairquant.quantization.recognise import describe_layers
        layers = describe_layers(model)
        out = {}
        for name, m in model.named_modules():
            if isinstance(m, bnb.nn.Linear4bit):
                qs = m.weight.quant_state
                state = [qs.absmax, qs.code, qs.offset, qs.state2.absmax, qs.state2.code]
                out[name] = [layers[name].bytes, m.weight.data.numel() + sum(t.numel() * t.element_size() for t in state),
                             layers[name].weight_format]
        print("RESULT " + json.dumps(out))
    '''
    proc = subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(body)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    assert out
    for name, (got, expected, fmt) in out.items():
        assert got == expected, name
        assert "double-quant" in fmt


@_needs("optimum.quanto")
def test_quanto_config_and_quanto_directly():
    result = _run('''
        from optimum.quanto import QModuleMixin, freeze, qint4, qint8, quantize
        cfg = tf.QuantoConfig(weights="int4")
        via_config = load("llama", cfg)
        gpt2 = load("gpt2", tf.QuantoConfig(weights="int8"))  # quanto skips Conv1D: nothing quantized
        direct = tiny("bert")
        quantize(direct, weights=qint8, activations=qint8)
        freeze(direct)
        unfrozen = tiny("vit")
        quantize(unfrozen, weights=qint4)  # not frozen: float weights, fake-quantized per call
        def bits_of(m):
            if isinstance(m, QModuleMixin) and m.weight_qtype is not None:
                return m.weight_qtype.bits, m.weight.numel()
            return float_bits(m)
        report({"config": via_config, "gpt2": gpt2, "direct": direct, "unfrozen": unfrozen}, bits_of)
    ''')
    _check_common(result)
    m = result["models"]
    assert m["config"]["quantized_by"] == ["optimum-quanto"] and m["config"]["declared"]["quant_method"] == "quanto"
    q = m["config"]["layers"]["model.layers.0.self_attn.q_proj"]
    assert (q["kind"], q["weight_bits"], q["activation_bits"]) == ("QLinear", 4.0, None)
    assert q["bytes"] == 64 * 64 // 2 + 64 * 4 + 64 * 4  # packed int4 + float32 scale and shift per row
    assert m["gpt2"]["quantized_by"] == [] and m["gpt2"]["declared"]["library"] == "optimum-quanto"
    d = m["direct"]["layers"]["bert.encoder.layer.0.output.dense"]
    assert (d["weight_bits"], d["activation_bits"], d["activation_mode"]) == (8.0, 8, "static")
    u = m["unfrozen"]["layers"]["vit.layers.0.mlp.fc1"]
    assert u["weight_bits"] == 4.0 and "not frozen" in u["weight_format"] and u["bytes"] == 64 * 128 * 4


def test_torch_ao_dynamic():
    result = _run('''
        bert = torch.ao.quantization.quantize_dynamic(tiny("bert"), {torch.nn.Linear}, dtype=torch.qint8)
        gpt2 = torch.ao.quantization.quantize_dynamic(tiny("gpt2"), {torch.nn.Linear, Conv1D}, dtype=torch.qint8)
        half = torch.ao.quantization.quantize_dynamic(tiny("vit"), {torch.nn.Linear}, dtype=torch.float16)
        def bits_of(m):
            if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
                w = m.weight()
                return (8 if w.is_quantized else 16), w.numel()
            return float_bits(m)
        report({"bert": bert, "gpt2": gpt2, "half": half}, bits_of)
    ''')
    _check_common(result)
    bert, gpt2, half = (result["models"][k] for k in ("bert", "gpt2", "half"))
    assert bert["quantized_by"] == ["torch.ao"]
    q = bert["layers"]["classifier"]
    assert (q["kind"], q["weight_bits"], q["activation_bits"], q["activation_mode"]) == ("Linear", 8.0, 8, "dynamic")
    assert q["bytes"] == 3 * 64 + 16  # int8 + one scale and zero point
    # asked for Conv1D too, torch.ao silently leaves it float: counted, and only lm_head is quantized
    assert [n for n, i in gpt2["layers"].items() if i["library"]] == ["lm_head"]
    assert all(gpt2["layers"][n]["kind"] == "Conv1D" and gpt2["layers"][n]["library"] is None for n in GPT2_CONV1D)
    h = half["layers"]["vit.layers.0.mlp.fc2"]
    assert (h["weight_bits"], h["activation_bits"]) == (16.0, None)


@_needs("hqq")
def test_hqq_directly():
    result = _run('''
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear
        model = tiny("llama")
        for name, m in list(model.named_modules()):
            if type(m) is torch.nn.Linear:
                parent, _, leaf = name.rpartition(".")
                setattr(model.get_submodule(parent), leaf, HQQLinear(m, BaseQuantizeConfig(nbits=4, group_size=32),
                        compute_dtype=torch.float32, device="cpu"))
        def bits_of(m):
            if isinstance(m, HQQLinear):
                return m.meta["nbits"], math.prod(m.meta["shape"])
            return float_bits(m)
        report({"llama": model}, bits_of)
    ''')
    _check_common(result)
    llama = result["models"]["llama"]
    assert llama["quantized_by"] == ["hqq"]
    q = llama["layers"]["model.layers.0.mlp.gate_proj"]
    assert (q["kind"], q["weight_bits"], q["numel"]) == ("HQQLinear", 4.0, 128 * 64)
    assert q["bytes"] == 128 * 64 // 2 + 2 * (128 * 64 // 32) * 4  # packed 4-bit + float32 scale and zero per group


# ----------------------------------------------------------------------------- in this process
def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64)).eval()


def test_float_model_counts_every_weight_bearing_module_and_ties_once():
    model = _gpt2()
    layers = describe_layers(model)
    assert quantized_by(model) == [] and declared_quantization(model) is None
    assert effective_bits(model) == 32.0
    kinds = {name: info.kind for name, info in layers.items()}
    assert sum(k == "Conv1D" for k in kinds.values()) == 8 and kinds["transformer.wte"] == "Embedding"
    assert layers["lm_head"].tied_to == "transformer.wte"
    total = sum(i.numel for i in layers.values() if i.tied_to is None)
    assert total == sum(p.numel() for n, p in model.named_parameters() if p.ndim >= 2)
    conv1d = sum(i.numel for i in layers.values() if i.kind == "Conv1D")
    assert (conv1d, total) == (98_304, 110_592)  # 89 % of this tiny GPT-2's weights are in Conv1D
    half = _gpt2().to(torch.bfloat16)
    assert effective_bits(half) == 16.0


def test_mixed_float_widths_are_weighted_by_numel():
    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 30).to(torch.float16))
    assert effective_bits(model) == pytest.approx((100 * 32 + 300 * 16) / 400)


class Funky(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(4, 4))


class MyLinear(torch.nn.Linear):
    """A Linear subclass from outside torch/transformers: it could be fake-quantizing."""


@pytest.mark.parametrize(
    "layer, named",
    [
        (Funky(), "Funky"),
        (MyLinear(4, 4), "MyLinear"),
        (torch.nn.MultiheadAttention(8, 2), "in_proj_weight"),
        (torch.nn.LSTM(4, 4), "weight_ih_l0"),
    ],
    ids=["custom-module", "linear-subclass", "multihead-attention", "lstm"],
)
def test_unknown_weight_bearing_layer_is_an_error_naming_it(layer, named):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), layer)
    with pytest.raises(FairQuantError, match=named) as err:
        describe_layers(model)
    assert "'1'" in str(err.value)  # the module's name
    with pytest.raises(FairQuantError):
        effective_bits(model)


def test_torch_ao_dynamic_lstm_is_not_skipped():
    model = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.LSTM(4, 4)), {torch.nn.LSTM}, dtype=torch.qint8)
    with pytest.raises(FairQuantError, match="LSTM"):
        describe_layers(model)


def test_model_without_weights_is_an_error():
    with pytest.raises(FairQuantError, match="no weight-bearing module"):
        effective_bits(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.LayerNorm(4)))


def test_layerinfo_storage_bits():
    info = LayerInfo("Linear4bit", "bitsandbytes", 4.0, None, None, numel=64, bytes=36)
    assert info.quantized and info.storage_bits == 4.5
