"""The torchao backend: Linear modules, int2/int4/int8 weights, dynamic int8 activations.

What it is for: artifacts that plain transformers loads. A torchao-quantized model is saved with
``save_pretrained`` and a ``TorchAoConfig`` in ``config.json``, so
``AutoModelFor*.from_pretrained(folder_or_repo)`` rebuilds it (torchao installed, no hf_fairquant).

Per module (one ``FqnToConfig`` keyed by module name; a ``_default`` key would also hit 1-d
biases): w8a8 → ``Int8DynamicActivationInt8WeightConfig``; w8 → ``Int8WeightOnlyConfig``;
w4/w2 → ``IntxWeightOnlyConfig`` (``PerGroup(group_size)``); w4a8/w2a8 →
``Int8DynamicActivationIntxWeightConfig``. Activations are quantized **dynamically** (per-token
int8 ranges computed on every forward), so ``a8`` means dynamic int8 here and ``calibrate`` does
nothing. torchao quantizes ``nn.Linear``, and an ``nn.Embedding`` that a recipe's override names
(weight-only ``IntxWeightOnlyConfig``, in PTQ and QAT alike; a language model's input embedding:
``overrides: {model.embed_tokens: w4}``); a plan that quantizes a Conv2d is refused before any
work (optimum-quanto can do it).

QAT: ``prepare_qat`` wraps each planned Linear in ``QATConfig(base, step="prepare")`` (fake
quantization, straight-through gradients); ``convert_qat`` applies ``step="convert"``. torchao's QAT
infers fake quantizers only from the intx configs, so 8-bit QAT uses int8 intx configs (per output
channel) instead of the PTQ int8 ones.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from ...errors import ArtifactError, FairQuantError, UnsupportedByBackendError
from .. import artifact_checks
from ..recipe import DEFAULT_GROUP_SIZE, LayerQuant, QuantRecipe, is_conv1d
from . import (
    FROM_CONV1D,
    ArtifactFormat,
    Plan,
    Publishing,
    Quantizer,
    conv1d_as_linear,
    linear_from_conv1d,
    register_backend,
)

_INT_DTYPES = {2: torch.int2, 4: torch.int4, 8: torch.int8}
_BITS_BY_DTYPE = {v: k for k, v in _INT_DTYPES.items()}
CONFIG_NAME = "config.json"


def _is_quantized_weight(weight: Any) -> bool:
    from torchao.utils import TorchAOBaseTensor

    return isinstance(weight, TorchAOBaseTensor)


@dataclasses.dataclass(frozen=True)
class TorchAoQuantizer(Quantizer):
    """``group_size``: weights per scale of int4/int2 weights (``recipe.group_size``, default 32)."""

    group_size: int = DEFAULT_GROUP_SIZE
    name = "torchao"

    def configure(self, recipe: QuantRecipe) -> "TorchAoQuantizer":
        return self if recipe.group_size == self.group_size else dataclasses.replace(self, group_size=recipe.group_size)

    # ------------------------------------------------------------------ what it cannot do
    def check(self, model: torch.nn.Module, plan: Plan) -> None:
        planned = {n: q for n, q in plan.items() if q is not None}
        embeddings = {n for n in planned if isinstance(model.get_submodule(n), torch.nn.Embedding)}
        activated = sorted(n for n in embeddings if planned[n].activation_bits)
        if activated:
            raise UnsupportedByBackendError(
                f"the embedding(s) {', '.join(activated)} look token ids up in a table: there are no input activations "
                f"to quantize; give them weight-only bits (w8 or w4), e.g. overrides: {{{activated[0]}: w4}}"
            )
        convs = [n for n in planned if n not in embeddings and not isinstance(model.get_submodule(n), torch.nn.Linear)
                 and not is_conv1d(model.get_submodule(n))]  # Conv1D: quantized as the same Linear
        if convs:
            raise UnsupportedByBackendError(
                f"backend torchao quantizes nn.Linear only; the recipe quantizes {len(convs)} other module(s): "
                f"{', '.join(convs[:8])}{' …' if len(convs) > 8 else ''}. Use `backend: quanto` (optimum-quanto "
                f"quantizes Conv2d), or exclude them (exclude: {json.dumps(convs[:4])})"
            )
        grouped = [n for n, q in planned.items() if q.weight_bits < 8 and _row_size(model.get_submodule(n)) % self.group_size]
        if grouped:
            raise UnsupportedByBackendError(
                f"backend torchao groups int{planned[grouped[0]].weight_bits} weights by group_size={self.group_size}, "
                f"which does not divide the input features of {', '.join(grouped[:8])} "
                f"({_row_size(model.get_submodule(grouped[0]))}); choose a group_size that divides them, give "
                f"them 8 bits, or use `backend: quanto`"
            )

    # ------------------------------------------------------------------ PTQ
    def torchao_config(self, quant: LayerQuant) -> Any:
        """The torchao PTQ config of one module."""
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8DynamicActivationIntxWeightConfig,
            Int8WeightOnlyConfig,
            IntxWeightOnlyConfig,
        )
        from torchao.quantization.granularity import PerGroup

        if quant.weight_bits == 8:
            return Int8DynamicActivationInt8WeightConfig() if quant.activation_bits else Int8WeightOnlyConfig()
        dtype, granularity = _INT_DTYPES[quant.weight_bits], PerGroup(self.group_size)
        if quant.activation_bits:
            return Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=granularity)
        return IntxWeightOnlyConfig(weight_dtype=dtype, granularity=granularity)

    def fqn_config(self, plan: Plan, qat_step: str | None = None, model: torch.nn.Module | None = None) -> Any:
        """One ``FqnToConfig`` keyed by module name (``qat_step``: wrap each in a ``QATConfig``).
        An ``nn.Embedding`` of ``model`` gets weight-only intx weights (PTQ and QAT alike: the
        config torchao's QAT fake-quantizes embeddings with)."""
        from torchao.quantization import FqnToConfig
        from torchao.quantization.qat import QATConfig

        configs = {}
        for name, quant in plan.items():
            if quant is None:
                continue
            embedding = model is not None and isinstance(model.get_submodule(name), torch.nn.Embedding)
            base = self.qat_base_config(quant) if embedding or qat_step is not None else self.torchao_config(quant)
            configs[name] = base if qat_step is None else QATConfig(base, step=qat_step)
        return FqnToConfig(configs)

    def apply(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        """Quantize now (torchao has no separate freeze: the weights become integer tensors);
        a planned ``Conv1D`` becomes the same ``nn.Linear`` first (torchao's int8 tensors have no
        ``addmm``, which ``Conv1D`` calls)."""
        from torchao.quantization import quantize_

        conv1d_as_linear(model, plan)
        quantize_(model, self.fqn_config(plan, model=model), filter_fn=None)
        return model

    def quantize_module(self, module: torch.nn.Module, quant: LayerQuant) -> torch.nn.Module:
        module = linear_from_conv1d(module)
        if not isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            raise UnsupportedByBackendError(f"backend torchao quantizes nn.Linear (and named nn.Embedding) only, not {type(module).__name__}; use `backend: quanto`")
        from torchao.quantization import quantize_

        holder = torch.nn.Sequential(copy.deepcopy(module))
        quantize_(holder, self.fqn_config({"0": quant}, model=holder), filter_fn=None)
        return holder[0]

    def needs_calibration(self, plan: Plan) -> bool:
        return False  # dynamic activation ranges

    def calibrate(self, model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> None:
        """Nothing to record: torchao's int8 activations are dynamic (ranges per forward)."""

    def freeze(self, model: torch.nn.Module) -> torch.nn.Module:
        return model  # ``apply`` already stored integer weights

    # ------------------------------------------------------------------ QAT
    def qat_base_config(self, quant: LayerQuant) -> Any:
        """The PTQ config a QAT module converts to (intx configs: the ones torchao QAT can fake-quantize)."""
        from torchao.quantization import (
            Int8DynamicActivationIntxWeightConfig,
            IntxWeightOnlyConfig,
        )
        from torchao.quantization.granularity import PerAxis, PerGroup

        dtype = _INT_DTYPES[quant.weight_bits]
        granularity = PerAxis(0) if quant.weight_bits == 8 else PerGroup(self.group_size)
        if quant.activation_bits:
            return Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=granularity)
        return IntxWeightOnlyConfig(weight_dtype=dtype, granularity=granularity)

    def prepare_qat(
        self, model: torch.nn.Module, plan: Plan, batches: Iterable[Mapping[str, torch.Tensor]] = (), range_momentum: float = 0.9
    ) -> None:
        from torchao.quantization import quantize_

        self.check(model, plan)
        conv1d_as_linear(model, plan)
        quantize_(model, self.fqn_config(plan, "prepare", model=model), filter_fn=None)
        return None  # no activation ranges to track: they are dynamic

    def convert_qat(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        from torchao.quantization import quantize_

        quantize_(model, self.fqn_config(plan, "convert", model=model), filter_fn=None)
        return model

    # ------------------------------------------------------------------ reading a model back
    def owns(self, model: torch.nn.Module) -> bool:
        return bool(self.layer_bits(model))

    def layer_bits(self, model: torch.nn.Module) -> dict[str, LayerQuant]:
        out = {}
        for name, module in model.named_modules():
            quant = _module_quant(module)
            if quant is not None:
                out[name] = quant
        return out

    def is_converted(self, model: torch.nn.Module) -> bool:
        return any(_is_quantized_weight(getattr(m, "weight", None)) for m in model.modules())

    def is_frozen(self, model: torch.nn.Module) -> bool:
        return not any(getattr(m, "weight_fake_quantizer", None) is not None for m in model.modules())

    def quantized_weight(self, module: torch.nn.Module) -> torch.Tensor:
        """The integer weight dequantized, in the float module's layout (a Conv1D's ``[in, out]``)."""
        weight = module.weight
        weight = (weight.dequantize() if _is_quantized_weight(weight) else weight).detach()
        return weight.t() if getattr(module, FROM_CONV1D, False) else weight


def _row_size(module: torch.nn.Module) -> int:
    """Weights per output row: a Linear's input features, an Embedding's dimension, a Conv1D's rows."""
    if isinstance(module, torch.nn.Embedding):
        return module.embedding_dim
    return module.weight.shape[0] if is_conv1d(module) else module.in_features


def _module_quant(module: torch.nn.Module) -> LayerQuant | None:
    """What a torchao module holds: an integer weight tensor subclass, or a QAT fake quantizer."""
    weight = getattr(module, "weight", None)
    if _is_quantized_weight(weight):
        kind = type(weight).__name__
        if kind == "Int8Tensor":
            return LayerQuant(8, 8 if getattr(weight, "act_quant_kwargs", None) is not None else None)
        if kind == "IntxUnpackedToInt8Tensor":
            acts = getattr(weight, "activation_quantization", None)
            return LayerQuant(_BITS_BY_DTYPE[weight.target_dtype], 8 if acts is not None else None)
        raise FairQuantError(f"torchao weight type {kind} is not one this package writes (Int8Tensor, IntxUnpackedToInt8Tensor)")
    weight_fq = getattr(module, "weight_fake_quantizer", None)
    if weight_fq is not None:
        acts = getattr(module, "activation_fake_quantizer", None)
        return LayerQuant(_BITS_BY_DTYPE[weight_fq.config.dtype], 8 if acts is not None else None)
    return None


class TorchAoArtifact(ArtifactFormat):
    """``save_pretrained`` with a ``TorchAoConfig``: plain ``AutoModelFor*.from_pretrained`` and
    ``pipeline()`` load it (torchao installed)."""

    name = "torchao"
    publishing = Publishing(
        library="torchao",
        loads_with_transformers=True,
        note=("Quantized with torchao: int8 weights run on int8 kernels with dynamic (per-token) int8 activations; "
              "int4/int2 weights are stored unpacked in int8 bytes."),
        activations="dynamic 8-bit activations, ranges computed per forward",
        tags=("torchao",),
    )
    expects = "config.json with a torchao quantization_config, and model.safetensors"

    def artifact_files(self) -> tuple[str, ...]:
        return (CONFIG_NAME, "model.safetensors")

    def check(self, model: torch.nn.Module, plan: Plan) -> None:
        """A torchao folder loads with plain transformers, which builds ``Conv1D`` where the model
        class has one and cannot put integer weights into it: a plan that quantizes ``Conv1D`` is
        published through optimum-quanto instead (``hf_fairquant.load_quantized``)."""
        conv1d = [n for n, q in plan.items() if q is not None and is_conv1d(model.get_submodule(n))]
        if conv1d:
            raise UnsupportedByBackendError(_conv1d_refusal(conv1d))

    def save(self, model: torch.nn.Module, folder: Path, recipe: QuantRecipe | None = None) -> None:
        """``save_pretrained`` with a ``TorchAoConfig`` of the model's own modules in ``config.json``."""
        from transformers import TorchAoConfig
        from transformers.quantizers.auto import AutoHfQuantizer

        converted = [n for n, m in model.named_modules() if getattr(m, FROM_CONV1D, False)]
        if converted:
            raise UnsupportedByBackendError(_conv1d_refusal(converted))
        if not TORCHAO.is_converted(model):
            raise FairQuantError("this torchao model is still fake-quantized (QAT): convert it first (convert_qat)")
        plan = TORCHAO.layer_bits(model)
        config = TorchAoConfig(TORCHAO.fqn_config(plan, model=model))
        saved = {"quantization_config": model.config.__dict__.get("quantization_config"),
                 "hf_quantizer": model.__dict__.get("hf_quantizer")}
        model.config.quantization_config = config
        model.hf_quantizer = AutoHfQuantizer.from_config(config, pre_quantized=True)  # what save_pretrained asks
        model.config.architectures = [type(model).__name__]
        try:
            model.save_pretrained(folder)
        finally:  # the model in memory stays as it was
            for owner, key in ((model.config, "quantization_config"), (model, "hf_quantizer")):
                if saved[key] is None:
                    owner.__dict__.pop(key, None)
                else:
                    setattr(owner, key, saved[key])
        for weights in sorted(folder.glob("*.safetensors")):  # self-checking without hf_fairquant.json
            artifact_checks.seal_weights(weights)

    def can_load(self, folder: Path) -> bool:
        try:
            config = json.loads((folder / CONFIG_NAME).read_text())
        except (OSError, ValueError):
            return False
        return (config.get("quantization_config") or {}).get("quant_method") == "torchao"

    def load(self, folder: Path) -> torch.nn.Module:
        import transformers
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(folder)
        arch = (config.architectures or [None])[0]
        model_cls = getattr(transformers, arch, None) if arch else None
        if model_cls is None:
            raise FairQuantError(f"config.architectures of {folder} names {arch!r}, not a transformers model class")
        for weights in sorted(Path(folder).glob("*.safetensors")):
            artifact_checks.check_sealed(weights)
        model, info = model_cls.from_pretrained(folder, output_loading_info=True)
        problems = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if problems:  # transformers only warns; a truncated or mismatched folder must not load
            raise ArtifactError(f"the weights in {folder} do not match {arch}: {problems}")
        return model.eval()


def _conv1d_refusal(names: list[str]) -> str:
    return (f"a torchao folder loads with plain transformers, which builds transformers' Conv1D at "
            f"{', '.join(names[:4])}{' …' if len(names) > 4 else ''} ({len(names)} layer(s)) and cannot load int weights "
            "into it; publish with `card.publish_backend: quanto` (loads with hf_fairquant.load_quantized) or exclude them")


TORCHAO = TorchAoQuantizer()
register_backend("torchao", TORCHAO, TorchAoArtifact())
