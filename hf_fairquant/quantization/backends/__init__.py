"""Quantization backends: one module per library, registered by name (the torchao style).

A backend has up to two halves, each optional:

- a :class:`Quantizer` — what quantizes the modules of a torch model. It compiles a resolved plan
  (``{module name: LayerQuant | None}``, from :meth:`~hf_fairquant.QuantRecipe.plan`) into its
  library's modules: ``check`` (what it cannot do, before any work), ``apply`` (swap modules in,
  weights not frozen yet: QAT starts here), ``calibrate``, ``freeze``; ``prepare_qat`` /
  ``convert_qat`` bracket quantization-aware training; ``layer_bits`` reads a quantized model back;
  ``straight_through`` gives explain a differentiable twin where the library can.
- an :class:`ArtifactFormat` — what a saved model of the backend is: ``save`` / ``can_load`` /
  ``load``, and its publishing facts (:class:`Publishing`: the library, the card's
  ``library_name``, tags, how to load it, what plain transformers does with it).

Callers never branch on a backend's name: they ask :func:`get_backend` (by name),
:func:`quantizer_of` (for a quantized model) or :func:`artifact_for_folder` (for a saved folder).
Built-in backends are imported on first use, so ``import hf_fairquant`` loads no quantization
library. A backend written elsewhere registers with :func:`register_backend`.

Models quantized elsewhere are recognised without set-up: :func:`quantizer_of` reads the model's
layers with :mod:`.recognise` (which imports no library), then imports the backend that reads that
library (bitsandbytes, hqq, torch.ao, or transformers for a model that carries a
``quantization_config``) — so a fresh process needs no ``import`` of the right backend first. A
backend may also take recipes of its own form (a transformers quantization config): recipe parsing
asks :func:`parse_foreign_recipe`.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ...errors import FairQuantError, MissingFileError, UnsupportedByBackendError

if TYPE_CHECKING:  # the recipe module validates backend names against this registry; torch loads on use
    import torch

    from ..recipe import LayerQuant, QuantRecipe

Plan = Mapping[str, "LayerQuant | None"]

#: Built-in backends and the module that registers each (imported lazily).
_BUILTIN = {
    "quanto": f"{__name__}.quanto", "torchao": f"{__name__}.torchao", "onnxruntime": f"{__name__}.onnxruntime",
    "transformers": f"{__name__}.transformers", "bitsandbytes": f"{__name__}.bitsandbytes", "hqq": f"{__name__}.hqq",
    "torch.ao": f"{__name__}.torch_ao",
}
#: The backend that reads the layers of each library :mod:`.recognise` names.
_LIBRARY_BACKEND = {"optimum-quanto": "quanto", "torchao": "torchao", "bitsandbytes": "bitsandbytes", "hqq": "hqq",
                    "torch.ao": "torch.ao"}
#: The backend that reads a model carrying a transformers quantization config (``hf_quantizer``).
_DECLARED_BACKEND = "transformers"
#: Backends whose recipes have a form of their own (asked by :func:`parse_foreign_recipe`).
_FOREIGN_RECIPE_BACKENDS = ("transformers",)
#: The backend a recipe compiles to when it names none: the research path (2-bit, Conv2d, static a8).
DEFAULT_BACKEND = "quanto"
_REGISTRY: dict[str, "Backend"] = {}
#: Loggers of backend libraries that warn, on import, about optional GPU kernel libraries a CPU
#: machine cannot load (harmless): quieted unless the user has set their level.
_NOISY_LOGGERS = {"torchao": logging.ERROR}


#: Log lines a library repeats on every call on a CPU, saying how it works there (dropped).
_REPEATED_LINES = {"bitsandbytes.autograd._functions": "MatMul8bitLt: inputs will be cast"}


class _DropLine(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_library_loggers() -> None:
    """Raise the level of :data:`_NOISY_LOGGERS` (left alone when the user has configured them)
    and drop :data:`_REPEATED_LINES`; ``import hf_fairquant`` calls it, before any library is imported."""
    for name, level in _NOISY_LOGGERS.items():
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)
    for name, prefix in _REPEATED_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLine) for f in logger.filters):
            logger.addFilter(_DropLine(prefix))


class Quantizer:
    """What quantizes the modules of a torch model (subclass it in a backend's module)."""

    #: the backend's name (recipes, YAML and the CLI use it: ``backend: quanto``)
    name: str = ""
    #: True for a backend that reads models quantized elsewhere (bitsandbytes, hqq, torch.ao, a
    #: transformers ``quantization_config``): their every weight-bearing layer must be readable
    #: (:func:`~.recognise.describe_layers`, strict), and recipes do not compile to it
    reads_foreign_models: bool = False
    #: True when :meth:`apply` builds a new model from the full-precision one (the caller's model
    #: is left as it was, so no copy is needed first; use the model ``apply`` returns)
    builds_new_model: bool = False
    #: True when an audit saves and reloads what :meth:`apply` built and audits the reloaded model
    #: too if it differs (the artifact that ships is not always the model that was evaluated)
    audits_round_trip: bool = False

    def configure(self, recipe: "QuantRecipe") -> "Quantizer":
        """This quantizer with the recipe's backend options (e.g. ``group_size``); default: itself."""
        return self

    def check(self, model: torch.nn.Module, plan: Plan) -> None:
        """Raise :class:`~hf_fairquant.errors.UnsupportedByBackendError` for what this backend cannot
        do (naming the modules and the backend that can) — before any work."""

    def apply(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        """Swap each planned module for this backend's (weights not frozen: fake-quantized) and
        return the quantized model — ``model`` itself, or a new model when :attr:`builds_new_model`
        (callers always use the returned one)."""
        raise NotImplementedError

    def quantize_module(self, module: torch.nn.Module, quant: "LayerQuant") -> torch.nn.Module:
        """A quantized copy of one module (unfrozen), for per-layer sensitivity passes."""
        raise NotImplementedError

    def needs_calibration(self, plan: Plan) -> bool:
        """True if :meth:`calibrate` must see data before ``freeze`` (static activation ranges)."""
        return any(q is not None and q.activation_bits for q in plan.values())

    def calibrate(self, model: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> None:
        """Record activation ranges over input ``batches`` (static activation quantization)."""
        raise NotImplementedError

    def freeze(self, model: torch.nn.Module) -> torch.nn.Module:
        """Store integer weights (the end of PTQ or QAT)."""
        raise NotImplementedError

    def is_frozen(self, model: torch.nn.Module) -> bool:
        """True once the quantized modules store integer weights (what an artifact saves)."""
        return True

    def prepare_qat(
        self, model: torch.nn.Module, plan: Plan, batches: Iterable[Mapping[str, torch.Tensor]] = (), range_momentum: float = 0.9
    ) -> Any:
        """Make ``model`` fake-quantize the planned modules for training (raise first what this
        backend cannot train). ``batches``: calibration inputs when :meth:`needs_calibration`.
        Returns an activation-range tracker (``.active``, ``.remove()``) or None."""
        raise UnsupportedByBackendError(f"backend {self.name} has no quantization-aware training")

    def convert_qat(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        """After QAT: store the integer weights (the model the trainer saves)."""
        raise NotImplementedError

    def owns(self, model: torch.nn.Module) -> bool:
        """True if ``model`` holds modules quantized by this backend."""
        raise NotImplementedError

    def layer_bits(self, model: torch.nn.Module) -> "dict[str, LayerQuant]":
        """``{module name: LayerQuant}`` of the modules this backend quantized in ``model``."""
        raise NotImplementedError

    # explain measures the quantized model's gradients and curvature on a twin whose forward
    # quantizes the weights and whose backward passes straight through to float weights
    #: whether :meth:`straight_through` builds such a twin
    has_straight_through: bool = False

    def straight_through(self, model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
        """``model`` (float, a copy the caller owns) made to fake-quantize ``plan``'s modules with
        straight-through gradients (see :attr:`has_straight_through`)."""
        raise UnsupportedByBackendError(f"backend {self.name} builds no straight-through quantized modules")

    def quantized_weight(self, module: torch.nn.Module) -> torch.Tensor:
        """The float values a quantized module computes with (integer weights dequantized)."""
        raise NotImplementedError

    def size_bytes(self, model: torch.nn.Module) -> int | None:
        """Bytes of the model's tensors when the generic count (the state dict) is wrong or harmful
        for this backend's models (e.g. bitsandbytes' ``state_dict`` repacks 4-bit weights); None:
        use the generic count."""
        return None

    def describe(self, model: torch.nn.Module) -> str:
        """A short description of how ``model`` was quantized (library and config), for reports."""
        return self.name


#: The card ``library_name`` of a folder plain transformers loads (a full-precision model's too).
PLAIN_LIBRARY_NAME = "transformers"
#: Set on an ``nn.Linear`` made from transformers' ``Conv1D`` (and on its quantized successor).
FROM_CONV1D = "hf_fairquant_from_conv1d"


def linear_from_conv1d(module: torch.nn.Module) -> torch.nn.Module:
    """transformers' ``Conv1D`` (``y = x @ W + b``, ``W`` of shape ``[in, out]``) as the same
    ``nn.Linear`` (weight ``W.T``): numerically the same layer, which backends quantize as a Linear.
    Marked with :data:`FROM_CONV1D`. Any other module is returned as it is."""
    import torch

    if not _is_conv1d(module):
        return module
    in_features, out_features = module.weight.shape
    weight = module.weight
    linear = torch.nn.Linear(in_features, out_features, bias=module.bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight.detach().t())
        if module.bias is not None:
            linear.bias.copy_(module.bias.detach())
    linear.weight.requires_grad_(weight.requires_grad)
    linear.train(module.training)
    setattr(linear, FROM_CONV1D, True)
    return linear


def conv1d_as_linear(model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
    """Every planned ``Conv1D`` of ``model`` replaced by its :func:`linear_from_conv1d` (in place)."""
    for name, quant in plan.items():
        if quant is not None and _is_conv1d(model.get_submodule(name)):
            model.set_submodule(name, linear_from_conv1d(model.get_submodule(name)))
    return model


def _is_conv1d(module: Any) -> bool:
    import sys

    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return conv1d is not None and type(module) is conv1d


@dataclass(frozen=True)
class Publishing:
    """What a model card and a push say about a backend's artifact."""

    #: the library that stores the weights (a card tag, and the prose)
    library: str
    #: True when plain ``transformers`` loads the folder (``from_pretrained``, ``pipeline()``)
    #: with ``library`` installed; else ``hf_fairquant.load_quantized`` does
    loads_with_transformers: bool
    #: one sentence on how the weights are stored and run (the card's "Quantization" section)
    note: str
    #: how activations marked ``a8`` are quantized (the per-layer table's legend)
    activations: str = "8-bit activations"
    #: what the card's limitations say about speed on a CPU ("" when nothing to add)
    speed_note: str = ""
    #: extra card tags
    tags: tuple[str, ...] = field(default=())

    @property
    def library_name(self) -> str:
        """The card's ``library_name``: transformers when it loads the folder (the Hub then shows
        the transformers snippet), else this package."""
        return PLAIN_LIBRARY_NAME if self.loads_with_transformers else "hf-fairquant"

    def load_line(self, repo_id: str, auto_class: str, pipeline_tag: str) -> str:
        if self.loads_with_transformers:
            return (f"Loads with plain transformers (and {self.library} installed): `{auto_class}.from_pretrained(\"{repo_id}\")` "
                    f"or `pipeline(\"{pipeline_tag}\", model=\"{repo_id}\")`; no hf_fairquant needed.")
        return (f"Load it with `hf_fairquant.load_quantized(\"{repo_id}\")`: these are {self.library} weights, and plain "
                "`transformers.from_pretrained` refuses this folder (by design) rather than load random weights.")

    def quantization_text(self, effective_bits: float, layer_bits: Mapping[str, str]) -> str:
        """A card's quantization section: the library, what ``a8`` means here, the bits per layer."""
        rows = "\n".join(f"| `{n}` | {b} |" for n, b in layer_bits.items())
        return (f"{self.library} (weights per layer as below; `a8` = {self.activations}). "
                f"Mean weight bits, weighted by parameters: {effective_bits:.2f}.\n\n| layer | bits |\n| --- | --- |\n{rows}")

    def load_snippet(self, repo_id: str, auto_class: str, pipeline_tag: str) -> str:
        if self.loads_with_transformers:
            return (f"from transformers import {auto_class}, pipeline\n\n"
                    f"model = {auto_class}.from_pretrained(\"{repo_id}\")  # {self.library} integer weights, exact logits of the audited model\n"
                    f"pipe = pipeline(\"{pipeline_tag}\", model=\"{repo_id}\")  # with its preprocessor")
        return ("from hf_fairquant import load_quantized\n\n"
                f"model = load_quantized(\"{repo_id}\")  # integer weights, exact logits of the audited model")


class ArtifactFormat:
    """What a saved model of one backend is (subclass it in a backend's module)."""

    #: the backend's name (as its quantizer's)
    name: str = ""
    publishing: Publishing
    #: what a folder of this format holds, for messages ("" when it writes no folder)
    expects: str = ""

    def save(self, model: torch.nn.Module, folder: Path, recipe: "QuantRecipe | None" = None) -> None:
        """Write the artifact of ``model`` into the (temporary, empty) ``folder``."""
        raise NotImplementedError

    def can_load(self, folder: Path) -> bool:
        """True if ``folder`` holds this backend's artifact."""
        return False

    def load(self, folder: Path) -> torch.nn.Module:
        """Rebuild the model :meth:`save` wrote (eval mode); raise on any mismatch."""
        raise NotImplementedError

    def artifact_files(self) -> tuple[str, ...]:
        """File names :meth:`save` writes (replaced whole on a re-save; a push needs them)."""
        return ()

    def check(self, model: torch.nn.Module, plan: Plan) -> None:
        """Raise :class:`~hf_fairquant.errors.UnsupportedByBackendError` when a model quantized
        under ``plan`` could not be saved in this format (before any work); default: it can."""

    def save_and_reload(self, model: torch.nn.Module) -> "tuple[torch.nn.Module | None, int | None, str | None]":
        """What ships: ``model`` saved into a scratch folder and loaded back — (the reloaded model
        or None, the folder's bytes or None, why it could not be saved or loaded, or None). The
        folder lives as long as the reloaded model (its weights may be memory-mapped)."""
        import shutil
        import tempfile
        import weakref

        folder = Path(tempfile.mkdtemp(prefix="hf_fairquant_artifact_"))
        try:
            self.save(model, folder)
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            reloaded = self.load(folder)
        except Exception as err:  # noqa: BLE001 - a library that cannot serialise says why
            shutil.rmtree(folder, ignore_errors=True)
            return None, None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        weakref.finalize(reloaded, shutil.rmtree, str(folder), True)
        return reloaded, size, None

    # A loaded artifact that is not a tree of torch modules (an ONNX Runtime session) describes
    # itself to the generic verbs (is_quantized, layer_bits, effective_bits, model_size_bytes).
    def owns(self, model: torch.nn.Module) -> bool:
        """True if ``model`` is a loaded artifact of this format that describes itself."""
        return False

    def layer_table(self, model: torch.nn.Module) -> "dict[str, LayerQuant | None]":
        """Every weight-bearing module's bits (None: float)."""
        raise NotImplementedError

    def effective_bits(self, model: torch.nn.Module) -> float:
        """Parameter-weighted mean weight bits."""
        raise NotImplementedError

    def size_bytes(self, model: torch.nn.Module) -> int:
        """Bytes of the artifact's files."""
        raise NotImplementedError


@dataclass(frozen=True)
class Backend:
    """A registered backend: its name and its halves (either may be None)."""

    name: str
    quantizer: Quantizer | None = None
    artifact: ArtifactFormat | None = None


def register_backend(name: str, quantizer: Quantizer | None = None, artifact: ArtifactFormat | None = None) -> Backend:
    """Make a backend available by ``name`` (a quantizer, an artifact format, or both)."""
    if not name or not isinstance(name, str):
        raise FairQuantError(f"a backend needs a name, got {name!r}")
    if quantizer is None and artifact is None:
        raise FairQuantError(f"backend {name!r} has neither a quantizer nor an artifact format")
    for half in (quantizer, artifact):
        if half is not None and half.name != name:
            raise FairQuantError(f"{type(half).__name__}.name is {half.name!r}; set it to the backend's name {name!r}")
    backend = Backend(name, quantizer, artifact)
    _REGISTRY[name] = backend
    return backend


def available_backends() -> list[str]:
    """Names :func:`get_backend` accepts."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


#: Built-in backends that read models quantized elsewhere (recipes of presets do not compile to them).
_READERS = ("transformers", "bitsandbytes", "hqq", "torch.ao")


def recipe_backends() -> list[str]:
    """Backends a preset recipe may name (``w4a8@torchao``): not the readers of models quantized
    elsewhere (a transformers quantization config is its own recipe)."""
    return [n for n in available_backends()
            if n not in _READERS and not (n in _REGISTRY and _REGISTRY[n].quantizer is not None
                                          and _REGISTRY[n].quantizer.reads_foreign_models)]


def get_backend(name: str) -> Backend:
    """The registered backend called ``name`` (a built-in one is imported on first use)."""
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise FairQuantError(f"unknown quantization backend {name!r}; allowed: {available_backends()}") from None


def quantizing_backends() -> list[str]:
    """Backends that quantize torch modules (a recipe may compile to them; the readers of models
    quantized elsewhere refuse recipes with a message)."""
    return [n for n in available_backends() if get_backend(n).quantizer is not None]


def publishable_backends() -> list[str]:
    """Backends that both quantize torch modules from a plan and save them (a run can publish with them)."""
    return [n for n in available_backends() if get_backend(n).quantizer is not None and get_backend(n).artifact is not None
            and not get_backend(n).quantizer.reads_foreign_models]


def get_quantizer(name: str) -> Quantizer:
    """The quantizer of backend ``name`` (an artifact-only backend is an error that says so)."""
    backend = get_backend(name)
    if backend.quantizer is None:
        raise UnsupportedByBackendError(
            f"backend {name} is an artifact format, not a quantizer of torch modules; recipes compile to "
            f"{quantizing_backends()}"
        )
    return backend.quantizer


def get_artifact(name: str) -> ArtifactFormat:
    """The artifact format of backend ``name``."""
    backend = get_backend(name)
    if backend.artifact is None:
        raise UnsupportedByBackendError(f"backend {name} writes no artifact of its own")
    return backend.artifact


def quantizer_of(model: torch.nn.Module, *, strict: bool = False) -> Quantizer | None:
    """The quantizer whose modules ``model`` holds (None for a float model), in a fresh process too.

    The layers are read first with :func:`~.recognise.quantized_by` (which imports no library) and
    the backend of each library found is imported. Then asked, in order: the backends that
    quantize models themselves (quanto, torchao, one registered elsewhere), so a model they can
    read stays theirs; for a model carrying a transformers quantization config, the transformers
    backend; then the readers of bitsandbytes, hqq and torch.ao layers. ``strict``: a
    weight-bearing layer the recogniser cannot read raises (naming it) instead of counting as not
    quantized."""
    from .recognise import declared_quantization, quantized_by

    try:
        libraries = quantized_by(model)
    except FairQuantError:
        if strict:
            raise
        libraries = []
    readers = [get_backend(_LIBRARY_BACKEND[lib]).quantizer for lib in libraries if lib in _LIBRARY_BACKEND]
    for backend in list(_REGISTRY.values()):
        quantizer = backend.quantizer
        if quantizer is not None and not quantizer.reads_foreign_models and _owns(quantizer, model):
            return quantizer
    if libraries and declared_quantization(model) is not None:
        quantizer = get_backend(_DECLARED_BACKEND).quantizer
        if _owns(quantizer, model):
            return quantizer
    for quantizer in readers:
        if quantizer is not None and _owns(quantizer, model):
            return quantizer
    return None


def _owns(quantizer: Quantizer, model: torch.nn.Module) -> bool:
    try:
        return quantizer.owns(model)
    except FairQuantError:  # holds this library's layers, but ones the backend does not write
        return False


def load_pre_quantized(path_or_id: Any, model_class: type | None = None) -> torch.nn.Module:
    """A pre-quantized transformers checkpoint (local folder or Hub id), checked then loaded by the
    backend that reads transformers quantization configs (see :func:`~.transformers.load_pre_quantized`)."""
    return get_backend(_DECLARED_BACKEND).artifact.load_checkpoint(path_or_id, model_class)


def check_pre_quantized(path_or_id: Any) -> Any:
    """Before any work: this machine can load the checkpoint's quantization format (raises naming
    what it needs); returns its quantization config."""
    return get_backend(_DECLARED_BACKEND).artifact.check_checkpoint(path_or_id)


def parse_foreign_recipe(value: Any) -> Any:
    """A recipe in a backend's own form (a transformers quantization config object, a mapping
    naming one, or an alias such as ``bnb-nf4``), or None when no backend takes ``value``."""
    for name in _FOREIGN_RECIPE_BACKENDS:
        recipe = get_backend(name).quantizer.parse_recipe(value)
        if recipe is not None:
            return recipe
    return None


def loaded_artifact_of(model: torch.nn.Module) -> ArtifactFormat | None:
    """The artifact format of a loaded artifact that describes itself (an ONNX Runtime model), or None."""
    for backend in list(_REGISTRY.values()):
        if backend.artifact is not None and backend.artifact.owns(model):
            return backend.artifact
    return None


def artifact_for_folder(folder: Path) -> ArtifactFormat:
    """The artifact format ``folder`` holds (every built-in backend is asked)."""
    for name in available_backends():
        artifact = get_backend(name).artifact
        if artifact is not None and artifact.can_load(folder):
            return artifact
    expected = [f"{get_backend(n).artifact.publishing.library}: {get_backend(n).artifact.expects}"
                for n in available_backends() if get_backend(n).artifact is not None and get_backend(n).artifact.expects]
    raise MissingFileError(
        f"{folder} holds no quantized model this package can load (asked backends {available_backends()}); "
        f"a folder written by hf_fairquant.save_quantized holds {'; or '.join(expected)}"
    )


def transformers_native(name: str) -> bool:
    """Whether backend ``name``'s artifact loads with plain transformers."""
    artifact = get_backend(name).artifact
    return artifact is not None and artifact.publishing.loads_with_transformers


#: The most of a plan's weights ``publish_backend: auto`` keeps float to publish transformers-native.
KEEP_FLOAT_LIMIT = 0.05


def publishable_with_transformers(
    model: torch.nn.Module, plan: Plan, recipe: "QuantRecipe"
) -> "tuple[str, dict[str, str]] | None":
    """What ``publish_backend: auto`` picks: (the first backend whose artifact plain transformers
    loads and which can take ``plan`` on ``model``, the modules it must keep float to do so —
    ``{name: why}``), or None if none can.

    Where the only obstacle is small non-Linear modules (a ViT's patch-embedding Conv2d: 0.7 % of
    ViT-B's weights), they are kept float when together they hold at most
    :data:`KEEP_FLOAT_LIMIT` of the planned weights."""
    import torch

    planned = {n: q for n, q in plan.items() if q is not None}
    others = [n for n in planned if not isinstance(model.get_submodule(n), (torch.nn.Linear, torch.nn.Embedding))
              and not _is_conv1d(model.get_submodule(n))]  # a named embedding is the backend's to take or refuse
    total = sum(model.get_submodule(n).weight.numel() for n in planned) or 1
    small = sum(model.get_submodule(n).weight.numel() for n in others) / total <= KEEP_FLOAT_LIMIT
    for name in available_backends():
        backend = get_backend(name)
        if backend.quantizer is None or backend.quantizer.reads_foreign_models or not transformers_native(name):
            continue
        quantizer = backend.quantizer.configure(recipe)
        for kept in ([], others if small and others and len(others) < len(planned) else None):
            if kept is None:
                continue
            trial = {n: (None if n in kept else q) for n, q in plan.items()}
            try:
                quantizer.check(model, trial)
                backend.artifact.check(model, trial)
            except UnsupportedByBackendError:
                continue
            why = f"{backend.artifact.publishing.library} quantizes nn.Linear only"
            return name, {n: f"{type(model.get_submodule(n)).__name__}: {why}" for n in kept}
    return None


__all__ = [
    "DEFAULT_BACKEND",
    "FROM_CONV1D",
    "KEEP_FLOAT_LIMIT",
    "PLAIN_LIBRARY_NAME",
    "ArtifactFormat",
    "Backend",
    "Plan",
    "Publishing",
    "Quantizer",
    "artifact_for_folder",
    "available_backends",
    "check_pre_quantized",
    "conv1d_as_linear",
    "get_artifact",
    "get_backend",
    "get_quantizer",
    "linear_from_conv1d",
    "load_pre_quantized",
    "loaded_artifact_of",
    "parse_foreign_recipe",
    "publishable_backends",
    "publishable_with_transformers",
    "quantizer_of",
    "quantizing_backends",
    "recipe_backends",
    "register_backend",
    "transformers_native",
]
