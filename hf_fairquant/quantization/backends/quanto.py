"""The optimum-quanto backend: Conv2d and Linear, int2/int4/int8 weights, static int8 activations.

Quanto simulates: an unfrozen module fake-quantizes its weights on every forward with
straight-through gradients (QAT, and explain's differentiable twin), ``freeze`` stores the
integer weights, and every forward dequantizes (no CPU speed-up). It is the research path of
this package (2-bit, Conv2d, static activation ranges); publish through a transformers-native
backend where the model allows. Its artifact: ``config.json`` (with a ``quantization_config``
plain transformers refuses), the flattened state dict and ``quantization_map.json``, read back by
``hf_fairquant.load_quantized``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from optimum.quanto import Calibration, QModuleMixin, QTensor, qint2, qint4, qint8
from optimum.quanto import freeze as quanto_freeze
from optimum.quanto.nn import quantize_module

from ...errors import ArtifactError, FairQuantError, MissingFileError, UnsupportedByBackendError
from .. import _quanto_fixes, artifact_checks
from ..recipe import LayerQuant
from . import (
    FROM_CONV1D,
    ArtifactFormat,
    Plan,
    Publishing,
    Quantizer,
    linear_from_conv1d,
    register_backend,
)

QTYPES = {2: qint2, 4: qint4, 8: qint8}
WEIGHTS_NAME = "model.safetensors"
QMAP_NAME = "quantization_map.json"
#: Put in config.json as ``quantization_config``: transformers' own QuantoConfig refuses it with a
#: ValueError that quotes this text, so a plain ``from_pretrained`` fails loudly instead of
#: re-initialising every quantized module (transformers 5 cannot load quanto weights).
PLAIN_LOAD_REFUSAL = {
    "quant_method": "quanto",
    "weights": (
        "hf_fairquant-quanto (optimum-quanto integer weights that plain transformers cannot load: "
        "use `from hf_fairquant import load_quantized; model = load_quantized(path_or_repo_id)`)"
    ),
}
BITS_BY_QTYPE_NAME = {q.name: b for b, q in QTYPES.items()}


def layer_quant_of(qtype_names: Mapping[str, str]) -> LayerQuant:
    """``{"weights": "qint4", "activations": "qint8" | "none"}`` (a quantization-map entry) → LayerQuant."""
    try:
        weights = BITS_BY_QTYPE_NAME[qtype_names["weights"]]
        acts = qtype_names.get("activations", "none")
        return LayerQuant(weights, None if acts in (None, "none") else BITS_BY_QTYPE_NAME[acts])
    except KeyError as err:
        raise FairQuantError(
            f"quantization map entry {dict(qtype_names)} names no supported qtype ({err}); allowed: "
            f"weights {sorted(BITS_BY_QTYPE_NAME)}, activations {sorted(BITS_BY_QTYPE_NAME)} or 'none'"
        ) from None


class QuantoQuantizer(Quantizer):
    name = "quanto"
    has_straight_through = True

    def check(self, model: torch.nn.Module, plan: Plan) -> None:
        embeddings = [n for n, q in plan.items() if q is not None and isinstance(model.get_submodule(n), torch.nn.Embedding)]
        if embeddings:
            raise UnsupportedByBackendError(
                f"optimum-quanto quantizes Conv2d and Linear, not the embedding(s) {', '.join(embeddings)}: use "
                "`backend: torchao` (weight-only int8/int4 embeddings), or drop the override that names them"
            )

    def quantize_module(self, module: torch.nn.Module, quant: LayerQuant) -> torch.nn.Module:
        """A quantized copy of ``module`` (transformers' ``Conv1D`` as the same ``nn.Linear``,
        weight transposed: quanto has no Conv1D module)."""
        _quanto_fixes.apply()  # QAT backward on non-contiguous gradients (version-checked)
        converted = linear_from_conv1d(module)
        if quant.weight_bits in (2, 4):  # packed weights need quanto's C++ extension: built once, under a lock
            from ..warmup import ensure_extension

            ensure_extension()
        qmodule = quantize_module(
            converted,
            weights=QTYPES[quant.weight_bits],
            activations=QTYPES[quant.activation_bits] if quant.activation_bits else None,
        )
        if qmodule is None:  # pragma: no cover - plans only hold Conv2d/Linear/Conv1D
            raise FairQuantError(f"optimum-quanto cannot quantize a {type(module).__name__}")
        if converted is not module:
            setattr(qmodule, FROM_CONV1D, True)
        return qmodule

    def apply(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        for name, quant in plan.items():
            if quant is None:
                continue
            qmodule = self.quantize_module(model.get_submodule(name), quant)
            qmodule.name = name
            model.set_submodule(name, qmodule)
        return model

    def calibrate(self, model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> None:
        """``streamline=False``: with streamlining a save/reload is not exact (optimum-quanto 0.2.7)."""
        was_training = model.training
        model.eval()
        with torch.no_grad(), Calibration(streamline=False):
            for inputs in batches:
                model(**inputs)
        model.train(was_training)

    def freeze(self, model: torch.nn.Module) -> torch.nn.Module:
        quanto_freeze(model)
        return model

    def prepare_qat(
        self, model: torch.nn.Module, plan: Plan, batches: Iterable[Mapping[str, torch.Tensor]] = (), range_momentum: float = 0.9
    ) -> "ActivationRangeTracker | None":
        """Swap in fake-quantizing modules; with ``batches``, calibrate the activation ranges and
        keep them following the training batches (:class:`ActivationRangeTracker`)."""
        self.check(model, plan)
        self.apply(model, plan)
        batches = list(batches)
        if not batches:
            return None
        self.calibrate(model, batches)
        return ActivationRangeTracker(model, momentum=range_momentum)

    def convert_qat(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        return self.freeze(model)

    def owns(self, model: torch.nn.Module) -> bool:
        return any(isinstance(m, QModuleMixin) for m in model.modules())

    def layer_bits(self, model: torch.nn.Module) -> dict[str, LayerQuant]:
        out = {}
        for name, module in model.named_modules():
            if isinstance(module, QModuleMixin) and module.weight_qtype is not None:
                act = module.activation_qtype
                out[name] = LayerQuant(
                    BITS_BY_QTYPE_NAME[module.weight_qtype.name], BITS_BY_QTYPE_NAME[act.name] if act else None
                )
        return out


    def is_frozen(self, model: torch.nn.Module) -> bool:
        return not any(isinstance(m, QModuleMixin) and not m.frozen for m in model.modules())

    def straight_through(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        """Unfrozen quanto modules fake-quantize their weights on every forward, gradients passing
        straight through to the float weights (as in QAT)."""
        return self.apply(model, plan)

    def quantized_weight(self, module: torch.nn.Module) -> torch.Tensor:
        """Integer weights dequantized (frozen) or the fake-quantized weights (unfrozen), in the
        layout of the float module (a Conv1D's ``[in, out]``)."""
        weight = module.weight if isinstance(module.weight, QTensor) else module.qweight
        weight = (weight.dequantize() if isinstance(weight, QTensor) else weight).detach()
        return weight.t() if getattr(module, FROM_CONV1D, False) else weight


class QuantoArtifact(ArtifactFormat):
    name = "quanto"
    publishing = Publishing(
        library="optimum-quanto",
        loads_with_transformers=False,
        note="Quantization is simulated by optimum-quanto: the model is smaller on disk but not faster on a CPU.",
        activations="8-bit activations, calibrated on group-stratified training examples",
        speed_note="optimum-quanto simulates quantization on a CPU",
        tags=("optimum-quanto",),
    )
    expects = "config.json, model.safetensors and quantization_map.json"

    def artifact_files(self) -> tuple[str, ...]:
        return ("config.json", WEIGHTS_NAME, QMAP_NAME)

    def save(self, model: torch.nn.Module, folder: Path, recipe: Any = None) -> None:
        """config.json (with :data:`PLAIN_LOAD_REFUSAL`), the flattened state dict, the quantization map."""
        from optimum.quanto import quantization_map
        from safetensors.torch import save_file

        unfrozen = [n for n, m in model.named_modules() if isinstance(m, QModuleMixin) and not m.frozen]
        if unfrozen:  # its state dict holds float weights, which load_quantized's frozen layout refuses
            raise FairQuantError(
                f"this optimum-quanto model is not frozen: {len(unfrozen)} module(s) still fake-quantize float weights "
                f"(QAT), e.g. {', '.join(unfrozen[:3])}; freeze it first (hf_fairquant.quantization.freeze(model); "
                "FairQuantTrainer.train() converts at its end)"
            )
        config = model.config
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        config.architectures = [type(model).__name__]
        previous = config.__dict__.get("quantization_config")
        config.quantization_config = dict(PLAIN_LOAD_REFUSAL)
        try:
            config.save_pretrained(folder)
        finally:  # the config in memory stays as it was
            if previous is None:
                config.__dict__.pop("quantization_config", None)
            else:
                config.quantization_config = previous
        qmap, map_hash = artifact_checks.sign(quantization_map(model), state)  # each names the other's hash
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "quantizer": "optimum-quanto", **map_hash})
        (folder / QMAP_NAME).write_text(json.dumps(qmap, indent=2, sort_keys=True))

    def can_load(self, folder: Path) -> bool:
        return (folder / QMAP_NAME).is_file()

    def load(self, folder: Path) -> torch.nn.Module:
        """Rebuild the model; missing or unexpected state-dict keys raise (quanto's ``requantize``
        loads with ``strict=False``, so a truncated checkpoint would load silently)."""
        import transformers

        missing_files = [f for f in ("config.json", WEIGHTS_NAME, QMAP_NAME) if not (folder / f).is_file()]
        if missing_files:
            raise MissingFileError(f"{folder} lacks {missing_files}: not a folder written by save_quantized")
        config = transformers.AutoConfig.from_pretrained(folder)
        if hasattr(config, "quantization_config"):  # PLAIN_LOAD_REFUSAL: for plain transformers only
            del config.quantization_config
        arch = (config.architectures or [None])[0]
        model_cls = getattr(transformers, arch, None) if arch else None
        if model_cls is None:
            raise ArtifactError(f"config.architectures of {folder / 'config.json'} names {arch!r}, not a transformers model class")
        state = artifact_checks.load_weights(folder / WEIGHTS_NAME)
        qmap = artifact_checks.verify(  # the map and the weights name each other's hash
            folder / QMAP_NAME, folder / WEIGHTS_NAME, artifact_checks.read_json(folder / QMAP_NAME), state
        )

        model = model_cls(config)
        plan = {}
        for name, q in qmap.items():
            try:
                model.get_submodule(name)
                plan[name] = layer_quant_of(q)
            except (AttributeError, KeyError, TypeError, FairQuantError) as err:
                raise ArtifactError(f"{folder / QMAP_NAME}: entry {name!r}: {q} does not fit {arch} ({err})") from err
        QUANTO.check(model, plan)
        QUANTO.apply(model, plan)
        QUANTO.freeze(model)  # the frozen layout is what the declared bits store: compare before loading
        artifact_checks.check_layout(model, state, folder / WEIGHTS_NAME)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ArtifactError(
                f"state dict of {folder / WEIGHTS_NAME} does not load into {arch}: missing keys "
                f"{sorted(result.missing_keys)[:8]}, unexpected keys {sorted(result.unexpected_keys)[:8]}"
            )
        return model.eval()



QUANTO = QuantoQuantizer()
register_backend("quanto", QUANTO, QuantoArtifact())


class ActivationRangeTracker:
    """During QAT, keep updating activation scales in training mode (as PyTorch's FakeQuantize
    observers do): an exponential moving average of a batch's absmax, detached from the graph.

    Without it the ranges stay those calibrated on the untrained model and, as the weights move,
    activations clip (measured: a W4A8 DistilBERT did not learn). Set ``active`` to choose
    which forwards update (the trainer updates every ``n``-th optimizer step, which keeps the
    cost off most steps); eval-mode forwards never do. Start it after calibration.
    """

    def __init__(self, model: torch.nn.Module, momentum: float = 0.9) -> None:
        from optimum.quanto.tensor import dtype_info

        self.momentum = momentum
        self.active = True
        self._qmax = dtype_info
        self._handles = []
        for module in model.modules():
            if isinstance(module, QModuleMixin) and module.activation_qtype is not None:
                self._handles.append(module.register_forward_pre_hook(self._before, prepend=True))
                self._handles.append(module.register_forward_hook(self._after, prepend=True))

    def _update(self, module: torch.nn.Module, name: str, value: Any) -> None:
        if not (self.active and module.training) or not isinstance(value, torch.Tensor) or isinstance(value, QTensor):
            return
        with torch.no_grad():
            # quanto's absmax_scale (abs, then max) measured ~50x slower than one aminmax pass
            lo, hi = torch.aminmax(value.detach())
            new = torch.maximum(-lo, hi) / self._qmax(module.activation_qtype.dtype).max
            # in place, before this forward's quantize hook reads it: no graph, no host sync
            scale = getattr(module, name)
            scale.lerp_(new.to(scale.dtype), 1.0 - self.momentum)

    def _before(self, module: torch.nn.Module, args: tuple) -> None:
        if args:
            self._update(module, "input_scale", args[0])

    def _after(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self._update(module, "output_scale", output)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
