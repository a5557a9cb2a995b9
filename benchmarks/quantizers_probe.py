"""What each quantizer does on this CPU with tiny from-config models (issue #22's groundwork).

For every case below and every model (LlamaForCausalLM, GPT2LMHeadModel with its transformers
``Conv1D``, BertForSequenceClassification, ViTForImageClassification — all built from a config,
random weights, saved to a temporary folder first: nothing comes from the Hub), one fresh
interpreter per case records:

* does it load / quantize (the error, verbatim, when not)?
* which weight-bearing module classes and weight tensor classes it leaves, and what GPT-2's
  ``Conv1D`` became; ``model.hf_quantizer`` and ``config.quantization_config``;
* does a forward run (the error when not); max |logit - FP logit|, loss FP → quantized;
* does ``save_pretrained`` → ``from_pretrained`` (or the library's own round trip) give the same
  logits (max |Δlogit|, loss after reload), and the bytes of the saved folder.

Run (alone, or with one thread — the machine has 2 cores)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/quantizers_probe.py \
        --out docs/results/quantizers_probe.json        # every case, one subprocess each
    python benchmarks/quantizers_probe.py --case bnb_nf4   # one case, JSON on stdout
    python benchmarks/quantizers_probe.py --render docs/results/quantizers_probe.json

Nothing here imports hf_fairquant: it probes the libraries as a user meets them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

MODELS = ("llama", "gpt2", "bert", "vit")
BATCH, SEQ = 2, 16


# ----------------------------------------------------------------------------- models
def build(name: str):
    """A tiny float model of ``name`` (seed 0) and a fixed batch with labels."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if name == "llama":
        config = tf.LlamaConfig(
            vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        )
        model = tf.LlamaForCausalLM(config)
    elif name == "gpt2":
        config = tf.GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64)
        model = tf.GPT2LMHeadModel(config)
    elif name == "bert":
        config = tf.BertConfig(
            vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=64, num_labels=3,
        )
        model = tf.BertForSequenceClassification(config)
    elif name == "vit":
        config = tf.ViTConfig(
            image_size=8, patch_size=2, num_channels=1, hidden_size=64, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=128, num_labels=10,
        )
        model = tf.ViTForImageClassification(config)
    else:
        raise ValueError(name)
    g = torch.Generator().manual_seed(1)
    if name in ("llama", "gpt2"):
        ids = torch.randint(0, 128, (BATCH, SEQ), generator=g)
        batch = {"input_ids": ids, "labels": ids}
    elif name == "bert":
        ids = torch.randint(0, 128, (BATCH, SEQ), generator=g)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 2])}
    else:
        batch = {"pixel_values": torch.randn(BATCH, 1, 8, 8, generator=g), "labels": torch.tensor([3, 7])}
    return model.eval(), batch


def run_forward(model, batch):
    import torch

    with torch.no_grad():
        out = model(**batch)
    return out.logits.detach().float(), float(out.loss)


# ----------------------------------------------------------------------------- cases
def tc_config(which: str):
    import torch
    from torchao.quantization import (
        Int4WeightOnlyConfig, Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup,
    )

    return {
        "int8_wo": lambda: Int8WeightOnlyConfig(),
        "int8_dyn": lambda: Int8DynamicActivationInt8WeightConfig(),
        "intx_int4": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32)),
        "intx_int2": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int2, granularity=PerGroup(32)),
        "int4_wo": lambda: Int4WeightOnlyConfig(),
        "float8_wo": lambda: __import__("torchao.quantization", fromlist=["x"]).Float8WeightOnlyConfig(),
    }[which]()


def hf_config(case: str):
    """The transformers quantization config of a ``from_pretrained`` case."""
    import transformers as tf

    if case.startswith("tao_"):
        return tf.TorchAoConfig(tc_config(case[len("tao_"):]))
    if case == "bnb_int8":
        return tf.BitsAndBytesConfig(load_in_8bit=True)
    if case in ("bnb_nf4", "bnb_fp4"):
        return tf.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=case[-3:])
    if case in ("quanto_int8", "quanto_int4"):
        return tf.QuantoConfig(weights=case[-4:])
    if case in ("hqq_4", "hqq_8"):
        return tf.HqqConfig(nbits=int(case[-1]), group_size=32)
    raise ValueError(case)


HF_CASES = [
    "tao_int8_wo", "tao_int8_dyn", "tao_intx_int4", "tao_intx_int2", "tao_int4_wo", "tao_float8_wo",
    "bnb_int8", "bnb_nf4", "bnb_fp4", "quanto_int8", "quanto_int4", "hqq_4", "hqq_8",
]
DIRECT_CASES = [
    "direct_torchao_int8_wo", "direct_torchao_intx_int4", "direct_quanto_int8", "direct_quanto_int4",
    "direct_torch_ao_dynamic", "direct_hqq_4",
]
# GPT-2 only: the library asked directly to quantize transformers' Conv1D
CONV1D_CASES = ["conv1d_torchao", "conv1d_quanto", "conv1d_torch_ao_dynamic", "conv1d_bnb_nf4_shape"]
# what cannot run here, and what it says (Llama only)
REFUSAL_CASES = ["int4_formats", "other_configs", "missing_package", "imports"]
CASES = HF_CASES + DIRECT_CASES + CONV1D_CASES + REFUSAL_CASES


def err(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    return text[:400]


class LogCapture:
    """Lines transformers logs at WARNING or above while loading (its CONVERSION report names
    the real error, e.g. torchao's "Requires mslk >= 1.0.0", only in the log)."""

    def __enter__(self):
        import logging

        self.lines: list[str] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = lambda record: self.lines.append(record.getMessage())
        self.handler, self.logger = handler, logging.getLogger("transformers")
        self.level = self.logger.level
        self.logger.setLevel(logging.WARNING)
        self.logger.addHandler(handler)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)

    def causes(self) -> list[str]:
        keep = []
        for text in self.lines:
            for line in text.splitlines():
                if any(k in line for k in ("Error", "Requires", "requires", "not supported", "CONVERSION")) and line not in keep:
                    keep.append(line.strip()[:300])
        return keep[:6]


def weight_bearing(model):
    """(name, module) of modules that hold a weight directly (any tensor attribute or method
    named weight / W_q), for listing what a library left."""
    for name, module in model.named_modules():
        w = module.__dict__.get("_parameters", {}).get("weight")
        if w is None:
            w = module.__dict__.get("_buffers", {}).get("weight")
        if w is not None and w.ndim >= 2 or getattr(module, "W_q", None) is not None or hasattr(module, "_packed_params"):
            yield name, module


def describe(model) -> dict:
    """Module class and weight class counts of the weight-bearing modules."""
    mods, weights = collections.Counter(), collections.Counter()
    for _, m in weight_bearing(model):
        mods[f"{type(m).__module__}.{type(m).__qualname__}"] += 1
        w = getattr(m, "weight", None)
        if callable(w) and not hasattr(w, "shape"):
            try:
                w = w()
            except Exception:  # noqa: BLE001
                w = None
        if w is not None:
            key = type(w).__qualname__ + (f"[{w.dtype}]" if type(w).__qualname__ in ("Tensor", "Parameter", "Int8Params") else "")
            weights[key] += 1
        elif getattr(m, "W_q", None) is not None:
            weights[f"W_q:{type(m.W_q).__qualname__}[{m.W_q.dtype}]"] += 1
    return {"modules": dict(mods), "weights": dict(weights)}


def conv1d_fate(model) -> str | None:
    """What GPT-2's attention ``c_attn`` and MLP ``c_fc`` are after quantization."""
    out = []
    for path in ("transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_fc", "lm_head"):
        try:
            m = model.get_submodule(path)
        except AttributeError:
            continue
        w = getattr(m, "weight", None)
        wt = type(w).__qualname__ if w is not None and not callable(w) else "method" if callable(w) else "-"
        out.append(f"{path.split('.')[-1]}={type(m).__qualname__}/{wt}")
    return ", ".join(out) or None


def quant_config_summary(model) -> dict:
    hq = model.__dict__.get("hf_quantizer")
    qc = getattr(model.config, "quantization_config", None)
    summary = {"hf_quantizer": None if hq is None else type(hq).__qualname__}
    if qc is not None:
        d = qc.to_dict() if hasattr(qc, "to_dict") else dict(qc)
        keep = {k: d[k] for k in ("quant_method", "load_in_8bit", "load_in_4bit", "bnb_4bit_quant_type",
                                   "bnb_4bit_use_double_quant", "weights", "activations", "quant_type",
                                   "nbits", "group_size", "modules_to_not_convert", "skip_modules") if k in d}
        if "quant_type" in keep and not isinstance(keep["quant_type"], (str, int, float)):
            keep["quant_type"] = str(keep["quant_type"])[:160]
        summary["quantization_config"] = {type(qc).__qualname__: keep}
        summary["config_type"] = type(qc).__qualname__
    return summary


def folder_bytes(folder: Path) -> tuple[int, list[str]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in files), [p.name for p in files]


def detail(model) -> dict:
    """Library-specific internals of one representative quantized layer."""
    out = {}
    for name, m in weight_bearing(model):
        w = getattr(m, "weight", None)
        tname = type(w).__qualname__ if w is not None and not callable(w) else ""
        if tname == "Params4bit":
            qs = w.quant_state
            out[name] = {
                "data": f"{w.data.dtype}{tuple(w.data.shape)}", "qs.shape": tuple(qs.shape), "blocksize": qs.blocksize,
                "quant_type": qs.quant_type, "nested": qs.nested, "absmax": f"{qs.absmax.dtype}{tuple(qs.absmax.shape)}",
                "packing_format_for_cpu": getattr(qs, "packing_format_for_cpu", False),
                "compute_dtype": str(getattr(m, "compute_dtype", None)),
            }
        elif tname == "Int8Params":
            scb = getattr(w, "SCB", None)
            out[name] = {"data": f"{w.data.dtype}{tuple(w.data.shape)}", "SCB": None if scb is None else f"{scb.dtype}{tuple(scb.shape)}",
                         "threshold": getattr(getattr(m, "state", None), "threshold", None),
                         "has_fp16_weights": getattr(getattr(m, "state", None), "has_fp16_weights", None)}
        elif hasattr(w, "__tensor_flatten__") and tname not in ("Tensor", "Parameter"):
            names, ctx = w.__tensor_flatten__()
            out[name] = {n: f"{getattr(w, n).dtype}{tuple(getattr(w, n).shape)}" for n in names}
            for attr in ("target_dtype", "act_quant_kwargs", "activation_quantization", "block_size", "bit_width"):
                if hasattr(w, attr):
                    out[name][attr] = str(getattr(w, attr))[:120]
            if hasattr(m, "weight_qtype"):
                out[name]["weight_qtype"] = str(m.weight_qtype)
                out[name]["activation_qtype"] = str(m.activation_qtype)
        elif getattr(m, "W_q", None) is not None:
            meta = m.meta or {}
            out[name] = {"W_q": f"{m.W_q.dtype}{tuple(m.W_q.shape)}",
                         **{k: (f"{v.dtype}{tuple(v.shape)}" if hasattr(v, "shape") else str(v)[:60]) for k, v in meta.items()}}
        elif hasattr(m, "_packed_params"):
            q = m.weight()
            out[name] = {"weight": f"{q.dtype}{tuple(q.shape)}", "qscheme": str(q.qscheme())}
        elif hasattr(m, "weight_qtype"):
            out[name] = {"weight_qtype": str(m.weight_qtype), "weight": f"{tname}[{w.dtype}]"}
        if out:
            break
    return out


# ----------------------------------------------------------------------------- one model
def probe_hf(case: str, name: str, tmp: Path) -> dict:
    """``from_pretrained(folder, quantization_config=X)``, forward, save, reload."""
    import torch

    rec: dict = {"model": name}
    fp, batch = build(name)
    fp_logits, rec["loss_fp"] = run_forward(fp, batch)
    src = tmp / f"{name}_fp"
    fp.save_pretrained(src)
    rec["fp_bytes"] = folder_bytes(src)[0]
    cls = type(fp)
    try:
        t0 = time.perf_counter()
        with LogCapture() as log:
            model = cls.from_pretrained(src, quantization_config=hf_config(case)).eval()
        rec["load_s"] = round(time.perf_counter() - t0, 2)
        rec["loads"] = True
    except Exception as e:  # noqa: BLE001
        rec["loads"], rec["load_error"] = False, err(e)
        if log.causes():
            rec["load_log"] = log.causes()
        return rec
    rec.update(describe(model))
    rec.update(quant_config_summary(model))
    if name == "gpt2":
        rec["conv1d"] = conv1d_fate(model)
    rec["detail_before_forward"] = detail(model)
    try:
        logits, rec["loss_q"] = run_forward(model, batch)
        logits2, _ = run_forward(model, batch)
        rec["forward"] = True
        rec["max_dlogit_vs_fp"] = float((logits - fp_logits).abs().max())
        rec["argmax_agree_fp"] = float((logits.argmax(-1) == fp_logits.argmax(-1)).float().mean())
        rec["second_forward_equal"] = bool(torch.equal(logits, logits2))
        rec["detail_after_forward"] = detail(model)
    except Exception as e:  # noqa: BLE001
        rec["forward"], rec["forward_error"] = False, err(e)
        logits = None
    out = tmp / f"{name}_{case}"
    try:
        model.save_pretrained(out)
        rec["saves"] = True
        rec["artifact_bytes"], rec["artifact_files"] = folder_bytes(out)
    except Exception as e:  # noqa: BLE001
        rec["saves"], rec["save_error"] = False, err(e)
        return rec
    try:
        back = cls.from_pretrained(out).eval()
        rec["reloads"] = True
        rec["reload_types_same"] = describe(back) == describe(model)
        if not rec["reload_types_same"]:
            rec["reload_describe"] = describe(back)
        rec["reload_config"] = quant_config_summary(back)
        logits_back, rec["loss_reload"] = run_forward(back, batch)
        if logits is not None:
            rec["max_dlogit_reload"] = float((logits_back - logits).abs().max())
            rec["reload_exact"] = bool(torch.equal(logits_back, logits))
            # and the reloaded model against a fresh load of the same config (was the
            # difference in the save, or in the first model?)
    except Exception as e:  # noqa: BLE001
        rec["reloads"], rec["reload_error"] = False, err(e)
    if case in ("bnb_nf4", "bnb_fp4") and rec.get("forward"):
        rec["bnb4"] = bnb4_save_checks(case, cls, src, batch, tmp / f"{name}_{case}_checks")
    return rec


def bnb4_save_checks(case: str, cls, src: Path, batch, tmp: Path) -> dict:
    """bitsandbytes 4-bit on a CPU with AVX512-BF16: the first eval-mode no-grad forward repacks
    each Linear4bit for the CPU kernel (absmax to bfloat16, transposed to (K/blocksize, N));
    ``save_pretrained`` then runs the inverse. Measure what that does to the saved file and to
    the model in memory, and two ways around it."""
    import torch
    from safetensors.torch import load_file

    out: dict = {}
    a = cls.from_pretrained(src, quantization_config=hf_config(case)).eval()
    b = cls.from_pretrained(src, quantization_config=hf_config(case)).eval()
    b.save_pretrained(tmp / "saved_before_forward")
    la, _ = run_forward(a, batch)
    a.save_pretrained(tmp / "saved_after_forward")
    la_after, _ = run_forward(a, batch)
    out["in_memory_changed_by_save"] = float((la_after - la).abs().max())
    back_b, _ = run_forward(cls.from_pretrained(tmp / "saved_before_forward").eval(), batch)
    out["saved_before_forward_reload_exact"] = bool(torch.equal(back_b, la))
    out["saved_before_forward_max_dlogit"] = float((back_b - la).abs().max())
    sa = load_file(tmp / "saved_after_forward" / "model.safetensors")
    sb = load_file(tmp / "saved_before_forward" / "model.safetensors")
    out["absmax_keys_differing"] = sorted(k for k in sa if k.endswith(".absmax") and not torch.equal(sa[k], sb[k]))[:3]
    k = next((k for k in sa if k.endswith(".absmax") and sb[k].numel() != sb[k].shape[0] or (k.endswith(".absmax") and sa[k].dim() == 2 and sa[k].shape[0] > 1)), None)
    if k is not None:
        n = sa[k].shape[1]
        out["absmax_example"] = {
            "key": k, "saved_after_forward": f"{sa[k].dtype}{tuple(sa[k].shape)}", "saved_before_forward": f"{sb[k].dtype}{tuple(sb[k].shape)}",
            "after == bf16(before).reshape(N, K/bs).T": bool(torch.equal(sa[k], sb[k].reshape(n, -1).T.to(torch.bfloat16))),
        }
    # the CPU repack switched off on every Linear4bit, before any forward, in both models
    def no_repack(model):
        for m in model.modules():
            if hasattr(m, "support_avx512bf16_for_cpu"):
                m.support_avx512bf16_for_cpu = False
        return model

    c = no_repack(cls.from_pretrained(src, quantization_config=hf_config(case)).eval())
    lc, _ = run_forward(c, batch)
    c.save_pretrained(tmp / "no_repack")
    out["no_repack_vs_repack_max_dlogit"] = float((lc - la).abs().max())
    back_c, _ = run_forward(no_repack(cls.from_pretrained(tmp / "no_repack").eval()), batch)
    out["no_repack_reload_exact"] = bool(torch.equal(back_c, lc))
    back_c2, _ = run_forward(cls.from_pretrained(tmp / "no_repack").eval(), batch)
    out["no_repack_saved_reloaded_with_repack_max_dlogit"] = float((back_c2 - lc).abs().max())
    return out


def probe_direct(case: str, name: str, tmp: Path) -> dict:
    """A library applied directly to the float model, then the naive ``save_pretrained`` →
    ``from_pretrained`` and the library's own round trip."""
    import torch

    rec: dict = {"model": name}
    fp, batch = build(name)
    fp_logits, rec["loss_fp"] = run_forward(fp, batch)
    model, _ = build(name)
    try:
        if case.startswith("direct_torchao_"):
            from torchao.quantization import quantize_

            quantize_(model, tc_config(case[len("direct_torchao_"):]))
        elif case.startswith("direct_quanto_"):
            from optimum.quanto import freeze, qint4, qint8, quantize

            quantize(model, weights=qint8 if case.endswith("int8") else qint4)
            freeze(model)
        elif case == "direct_torch_ao_dynamic":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif case == "direct_hqq_4":
            hqq_replace(model)
        rec["loads"] = True
    except Exception as e:  # noqa: BLE001
        rec["loads"], rec["load_error"] = False, err(e)
        return rec
    rec.update(describe(model))
    rec.update(quant_config_summary(model))
    if name == "gpt2":
        rec["conv1d"] = conv1d_fate(model)
    rec["detail_before_forward"] = detail(model)
    try:
        logits, rec["loss_q"] = run_forward(model, batch)
        rec["forward"] = True
        rec["max_dlogit_vs_fp"] = float((logits - fp_logits).abs().max())
        rec["argmax_agree_fp"] = float((logits.argmax(-1) == fp_logits.argmax(-1)).float().mean())
    except Exception as e:  # noqa: BLE001
        rec["forward"], rec["forward_error"] = False, err(e)
        return rec
    # the naive path a user tries: save_pretrained, then from_pretrained without a config
    out = tmp / f"{name}_{case}_naive"
    try:
        model.save_pretrained(out)
        rec["saves"] = True
        rec["artifact_bytes"], rec["artifact_files"] = folder_bytes(out)
        back = type(fp).from_pretrained(out).eval()
        rec["reloads"] = True
        rec["reload_describe"] = describe(back)
        logits_back, rec["loss_reload"] = run_forward(back, batch)
        rec["max_dlogit_reload"] = float((logits_back - logits).abs().max())
        rec["reload_exact"] = bool(torch.equal(logits_back, logits))
    except Exception as e:  # noqa: BLE001
        rec.setdefault("saves", False)
        rec["naive_error"] = err(e)
    # the library's own round trip
    own = tmp / f"{name}_{case}_own"
    own.mkdir()
    try:
        if case.startswith("direct_quanto_"):
            from optimum.quanto import quantization_map, requantize
            from safetensors.torch import load_file, save_file

            save_file(model.state_dict(), own / "model.safetensors")
            (own / "quantization_map.json").write_text(json.dumps(quantization_map(model)))
            again, _ = build(name)
            requantize(again, load_file(own / "model.safetensors"), json.loads((own / "quantization_map.json").read_text()))
        elif case == "direct_torch_ao_dynamic":
            torch.save(model.state_dict(), own / "state.pt")
            again, _ = build(name)
            again = torch.ao.quantization.quantize_dynamic(again, {torch.nn.Linear}, dtype=torch.qint8)
            again.load_state_dict(torch.load(own / "state.pt", weights_only=False))
        elif case == "direct_hqq_4":
            torch.save(model.state_dict(), own / "state.pt")
            again, _ = build(name)
            hqq_replace(again, empty=True)
            again.load_state_dict(torch.load(own / "state.pt", weights_only=False))
        else:  # torchao: torch.save of the tensor subclasses, load into a quantized skeleton
            from torchao.quantization import quantize_

            torch.save(model.state_dict(), own / "state.pt")
            again, _ = build(name)
            quantize_(again, tc_config(case[len("direct_torchao_"):]))
            again.load_state_dict(torch.load(own / "state.pt", weights_only=False), assign=True)
        rec["own_bytes"], rec["own_files"] = folder_bytes(own)
        logits_own, rec["loss_own_reload"] = run_forward(again.eval(), batch)
        rec["own_reload_exact"] = bool(torch.equal(logits_own, logits))
        rec["own_max_dlogit"] = float((logits_own - logits).abs().max())
    except Exception as e:  # noqa: BLE001
        rec["own_error"] = err(e)
    return rec


def hqq_replace(model, empty: bool = False) -> None:
    """Every nn.Linear → hqq's HQQLinear (4-bit, group 32, float32 compute, on the CPU);
    ``empty``: uninitialised layers a state dict is then loaded into."""
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    cfg = BaseQuantizeConfig(nbits=4, group_size=32)
    for name, module in list(model.named_modules()):
        if type(module) is torch.nn.Linear:
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            q = HQQLinear(None if empty else module, quant_config=cfg, compute_dtype=torch.float32, device="cpu",
                          initialize=not empty)
            setattr(parent, name.rpartition(".")[2], q)


def probe_conv1d(case: str, tmp: Path) -> dict:
    """GPT-2: each library asked, by name or type, for transformers' Conv1D."""
    import torch
    from transformers.pytorch_utils import Conv1D

    rec: dict = {"model": "gpt2"}
    fp, batch = build("gpt2")
    fp_logits, rec["loss_fp"] = run_forward(fp, batch)
    model, _ = build("gpt2")
    names = [n for n, m in model.named_modules() if isinstance(m, Conv1D)]
    rec["conv1d_modules"] = len(names)
    try:
        if case == "conv1d_torchao":
            from torchao.quantization import Int8WeightOnlyConfig, quantize_

            quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: isinstance(m, Conv1D))
        elif case == "conv1d_quanto":
            from optimum.quanto import freeze, qint8, quantize

            quantize(model, weights=qint8, include=names)
            freeze(model)
        elif case == "conv1d_torch_ao_dynamic":
            model = torch.ao.quantization.quantize_dynamic(model, {Conv1D}, dtype=torch.qint8)
        elif case == "conv1d_bnb_nf4_shape":
            # what shapes bitsandbytes' NF4 CPU path takes: a Linear4bit of each out_features
            import bitsandbytes as bnb

            shapes = {}
            for k_in, n_out in [(64, n) for n in (3, 10, 16, 32, 48, 64, 96, 100, 128)] + [(k, 64) for k in (32, 96, 100, 192)]:
                lin = torch.nn.Linear(k_in, n_out)
                q = bnb.nn.Linear4bit(k_in, n_out, quant_type="nf4", compute_dtype=torch.float32)
                q.weight = bnb.nn.Params4bit(lin.weight.data.clone(), requires_grad=False, quant_type="nf4").to("cpu")
                q.bias = torch.nn.Parameter(lin.bias.data.clone(), requires_grad=False)
                x = torch.randn(2, k_in)
                res = {}
                for mode in ("train", "eval"):
                    q.train(mode == "train")
                    try:
                        with torch.no_grad():
                            y = q(x)
                        res[mode] = f"ok (max |Δ| vs float {float((y - lin(x)).abs().max()):.3g})"
                    except Exception as e:  # noqa: BLE001
                        res[mode] = err(e)
                shapes[f"K={k_in},N={n_out}"] = res
            rec["nf4_shapes"] = shapes
            return rec
        rec["loads"] = True
    except Exception as e:  # noqa: BLE001
        rec["loads"], rec["load_error"] = False, err(e)
        return rec
    rec.update(describe(model))
    rec["conv1d"] = conv1d_fate(model)
    rec["detail_before_forward"] = detail(model)
    try:
        logits, rec["loss_q"] = run_forward(model, batch)
        rec["forward"] = True
        rec["max_dlogit_vs_fp"] = float((logits - fp_logits).abs().max())
    except Exception as e:  # noqa: BLE001
        rec["forward"], rec["forward_error"] = False, err(e)
    return rec


def probe_refusals(case: str, tmp: Path) -> dict:
    """What a config that cannot run on this CPU says, at load (Llama, float32)."""
    import torch
    import transformers as tf

    rec: dict = {"model": "llama", "attempts": {}}
    fp, batch = build("llama")
    src = tmp / "llama_fp"
    fp.save_pretrained(src)
    attempts = {}
    if case == "int4_formats":
        # torchao Int4WeightOnlyConfig applied directly to one Linear, each packing format
        from torchao.quantization import Int4WeightOnlyConfig, quantize_

        for fmt in ("plain", "plain_int32", "tile_packed_to_4d", "opaque", "preshuffled"):
            for dtype in (torch.float32, torch.bfloat16):
                lin = torch.nn.Sequential(torch.nn.Linear(64, 64)).to(dtype)
                try:
                    quantize_(lin, Int4WeightOnlyConfig(group_size=32, int4_packing_format=fmt))
                    with torch.no_grad():
                        lin(torch.randn(2, 64, dtype=dtype))
                    attempts[f"{fmt} ({str(dtype)[6:]})"] = f"ok: {type(lin[0].weight).__name__}"
                except Exception as e:  # noqa: BLE001
                    attempts[f"{fmt} ({str(dtype)[6:]})"] = err(e)
    elif case == "other_configs":
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig

        configs = {
            "TorchAoConfig(Float8WeightOnlyConfig())": lambda: tf.TorchAoConfig(Float8WeightOnlyConfig()),
            "TorchAoConfig(Float8DynamicActivationFloat8WeightConfig())": lambda: tf.TorchAoConfig(Float8DynamicActivationFloat8WeightConfig()),
            "FbgemmFp8Config()": lambda: tf.FbgemmFp8Config(),
            "FineGrainedFP8Config()": lambda: tf.FineGrainedFP8Config(),
            "EetqConfig()": lambda: tf.EetqConfig(),
            "GPTQConfig(bits=4, dataset=['a b c'])": lambda: tf.GPTQConfig(bits=4, dataset=["a b c"]),
            "AwqConfig(bits=4)": lambda: tf.AwqConfig(bits=4),
            "CompressedTensorsConfig()": lambda: tf.CompressedTensorsConfig(),
            "QuantoConfig(weights='int8', activations='int8')": lambda: tf.QuantoConfig(weights="int8", activations="int8"),
            "HqqConfig(nbits=4) + device_map={'': 'cpu'}": lambda: (tf.HqqConfig(nbits=4, group_size=32), {"device_map": {"": "cpu"}}),
        }
        for label, make in configs.items():
            log = LogCapture()
            try:
                made = make()
                config, kwargs = made if isinstance(made, tuple) else (made, {})
                with log:
                    model = type(fp).from_pretrained(src, quantization_config=config, **kwargs).eval()
                with torch.no_grad():
                    model(**batch)
                attempts[label] = f"loads and runs: {describe(model)['weights']}"
            except Exception as e:  # noqa: BLE001
                cause = [c for c in getattr(log, "lines", []) and log.causes() if "Error" in c or "equires" in c][:1]
                attempts[label] = err(e) + (f" — log: {cause[0]}" if cause else "")
    elif case == "imports":
        # which quantization libraries are in sys.modules after each step, in this fresh process
        libs = ("bitsandbytes", "torchao", "optimum.quanto", "hqq")
        loaded = lambda: ", ".join(lib for lib in libs if lib in sys.modules) or "none"  # noqa: E731
        attempts["after build('llama') and save_pretrained (this probe)"] = loaded()
        for name in ("gpt2", "bert", "vit"):
            build(name)
            attempts[f"after build({name!r})"] = loaded()
    elif case == "missing_package":
        # transformers' own message when the library is absent, simulated by patching the
        # availability check its quantizer module imported
        import importlib

        for label, module, fn, make in (
            ("BitsAndBytesConfig(load_in_4bit=True)", "quantizer_bnb_4bit", "is_bitsandbytes_available", lambda: tf.BitsAndBytesConfig(load_in_4bit=True)),
            ("BitsAndBytesConfig(load_in_8bit=True)", "quantizer_bnb_8bit", "is_bitsandbytes_available", lambda: tf.BitsAndBytesConfig(load_in_8bit=True)),
            ("QuantoConfig(weights='int8')", "quantizer_quanto", "is_optimum_quanto_available", lambda: tf.QuantoConfig(weights="int8")),
            ("HqqConfig(nbits=4)", "quantizer_hqq", "is_hqq_available", lambda: tf.HqqConfig(nbits=4, group_size=32)),
            ("TorchAoConfig(Int8WeightOnlyConfig())", "quantizer_torchao", "is_torchao_available", lambda: tf.TorchAoConfig(tc_config("int8_wo"))),
            ("TorchAoConfig('int8_weight_only') (a string)", "quantizer_torchao", "is_torchao_available", lambda: tf.TorchAoConfig("int8_weight_only")),
        ):
            mod = importlib.import_module(f"transformers.quantizers.{module}")
            saved = getattr(mod, fn)
            setattr(mod, fn, lambda: False)
            try:
                type(fp).from_pretrained(src, quantization_config=make())
                attempts[label] = "loads (the check is elsewhere)"
            except Exception as e:  # noqa: BLE001
                attempts[label] = err(e)
            finally:
                setattr(mod, fn, saved)
    rec["attempts"] = attempts
    return rec


def run_case(case: str) -> dict:
    import torch

    torch.set_num_threads(1)
    import transformers

    transformers.logging.set_verbosity_error()
    result = {"case": case, "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        if case in REFUSAL_CASES:
            try:
                result["models"].append(probe_refusals(case, Path(tmp)))
            except Exception as e:  # noqa: BLE001
                result["models"].append({"model": "llama", "probe_error": err(e), "tb": traceback.format_exc()[-1500:]})
            return result
        if case in CONV1D_CASES:
            try:
                result["models"].append(probe_conv1d(case, Path(tmp)))
            except Exception as e:  # noqa: BLE001
                result["models"].append({"model": "gpt2", "probe_error": err(e), "tb": traceback.format_exc()[-1500:]})
            return result
        for name in MODELS:
            try:
                rec = (probe_hf if case in HF_CASES else probe_direct)(case, name, Path(tmp))
            except Exception as e:  # noqa: BLE001
                rec = {"model": name, "probe_error": err(e), "tb": traceback.format_exc()[-1500:]}
            result["models"].append(rec)
    return result


# ----------------------------------------------------------------------------- driver / render
def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "torchao", "bitsandbytes", "optimum-quanto", "hqq", "accelerate", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def run_all(cases: list[str], out: Path, timeout: int) -> None:
    results = {"versions": versions(), "cases": []}
    if out.exists():
        old = json.loads(out.read_text())
        results["cases"] = [c for c in old.get("cases", []) if c["case"] not in cases]
    for case in cases:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True, timeout=timeout)
        wall = round(time.perf_counter() - t0, 1)
        try:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            res = {"case": case, "crashed": proc.returncode, "stderr": proc.stderr[-2000:]}
        res["wall_s"] = wall
        print(f"{case}: {wall}s", file=sys.stderr, flush=True)
        results["cases"].append(res)
        order = {c: i for i, c in enumerate(CASES)}
        results["cases"].sort(key=lambda c: order.get(c["case"], 999))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str))


def fmt(x, digits=3):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if x else "0"
    return str(x)


def render(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = [
        "| case | model | loads | forward | max Δlogit vs FP | loss FP → q | save → reload | max Δlogit reload | loss reload | bytes | Conv1D (GPT-2) | error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in data["cases"]:
        for r in c.get("models", []) or [{"model": "-", "probe_error": c.get("stderr", "")[-300:]}]:
            if "attempts" in r:
                for label, outcome in r["attempts"].items():
                    lines.append(f"| {c['case']} | {label} | | | | | | | | | | {outcome[:240].replace('|', '/')} |")
                continue
            if "nf4_shapes" in r:
                lines.append(f"| {c['case']} | Linear4bit(K, N), eval mode | | | | | | | | | | " + "; ".join(
                    f"{k}: {'ok' if v['eval'].startswith('ok') else v['eval'][:50]}" for k, v in r["nf4_shapes"].items()) + " |")
                continue
            error = r.get("probe_error") or ((r.get("load_error") or "") + (" — log: " + " / ".join(r["load_log"]) if r.get("load_log") else "")) if not r.get("loads") else None
            error = error or r.get("probe_error") or r.get("load_error") or r.get("forward_error") or r.get("save_error") or r.get("reload_error") or r.get("naive_error") or ""
            if r.get("reloads"):
                rt = "exact" if r.get("reload_exact") else "differs"
            elif r.get("saves") is False or r.get("naive_error"):
                rt = "fails"
            else:
                rt = "–"
            if "own_reload_exact" in r:
                rt += f"; own: {'exact' if r['own_reload_exact'] else 'differs'}"
            elif "own_error" in r:
                rt += "; own: fails"
            loss = f"{fmt(r.get('loss_fp'), 5)} → {fmt(r.get('loss_q'), 5)}" if r.get("forward") else "–"
            lines.append(
                f"| {c['case']} | {r['model']} | {'yes' if r.get('loads') else 'no'} | "
                f"{'yes' if r.get('forward') else ('no' if r.get('loads') else '–')} | {fmt(r.get('max_dlogit_vs_fp'))} | {loss} | "
                f"{rt} | {fmt(r.get('max_dlogit_reload'))} | {fmt(r.get('loss_reload'), 5)} | {fmt(r.get('artifact_bytes') or r.get('own_bytes'))} | "
                f"{r.get('conv1d') or ''} | {error[:160].replace('|', '/')} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", help="run one case in this process and print its JSON")
    parser.add_argument("--cases", nargs="*", default=None, help="cases to run (default: all)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/quantizers_probe.json"))
    parser.add_argument("--render", type=Path, help="print the markdown table of a results file")
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args()
    if args.render:
        print(render(args.render))
    elif args.case:
        print(json.dumps(run_case(args.case), default=str))
    else:
        run_all(args.cases or CASES, args.out, args.timeout)


if __name__ == "__main__":
    main()
