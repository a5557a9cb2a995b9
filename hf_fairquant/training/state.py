"""The trainer's own checkpoint state through transformers' public callback API.

:class:`FairQuantState` is a ``TrainerCallback`` with ``ExportableState``: transformers writes its
:meth:`state` into every checkpoint's ``trainer_state.json`` (``stateful_callbacks``). It carries
what a resumed run must agree on — the QAT recipe and the groups — and owns the Group-DRO weights,
so a checkpoint restores them exactly. :func:`saved_state` reads it back from a checkpoint folder;
:func:`load_checkpoint_weights` restores a checkpoint's weights whole, through the model's key conversion.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState, TrainerState
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from ..errors import ArtifactError, FairQuantError, MissingFileError
from .weighting import GroupDROWeights

TRAINER_STATE_NAME = "trainer_state.json"  # transformers' file name for TrainerState in a checkpoint


class FairQuantState(TrainerCallback, ExportableState):
    """Recipe, groups and the Group-DRO weights of a :class:`~hf_fairquant.FairQuantTrainer` run.

    The constructor takes exactly what :meth:`state` saves under ``"args"`` and the DRO weights
    are an attribute (``dro_q``), so ``TrainingArguments(restore_callback_states_from_checkpoint=True)``
    rebuilds an equal callback; the trainer restores it either way.
    """

    def __init__(
        self,
        quantization: dict | None = None,
        group_columns: list[str] | None = None,
        group_names: list[str] | None = None,
        dro_step_size: float | None = None,
    ) -> None:
        self.quantization = quantization
        self.group_columns = list(group_columns or [])
        self.group_names = list(group_names or [])
        self.dro = GroupDROWeights(len(self.group_names), dro_step_size) if dro_step_size is not None else None

    @property
    def dro_q(self) -> list[float] | None:
        return self.dro.q.tolist() if self.dro is not None else None

    @dro_q.setter
    def dro_q(self, value: list[float] | None) -> None:
        if value is not None and self.dro is not None:
            self.dro.load_state_dict({"q": value, "step_size": self.dro.step_size})

    def state(self) -> dict[str, Any]:
        return {
            "args": {
                "quantization": self.quantization,
                "group_columns": self.group_columns,
                "group_names": self.group_names,
                "dro_step_size": self.dro.step_size if self.dro is not None else None,
            },
            "attributes": {"dro_q": self.dro_q},
        }

    def restore(self, checkpoint: str) -> None:
        """Check that ``checkpoint`` was made with this recipe and these groups, then take its DRO
        weights. A checkpoint without this state (a plain ``Trainer``'s) is an error."""
        saved = saved_state(checkpoint)
        where = f"{os.path.join(checkpoint, TRAINER_STATE_NAME)}: stateful_callbacks[{type(self).__name__!r}]"
        attributes = saved.get("attributes") or {}
        if not isinstance(saved["args"], dict) or not isinstance(attributes, dict):
            raise ArtifactError(f"{where}: fields 'args' and 'attributes' must be objects, got {saved!r}")
        mine = self.state()["args"]
        for key in ("group_columns", "group_names", "quantization"):
            if saved["args"].get(key) != mine[key]:
                raise FairQuantError(
                    f"checkpoint {checkpoint} was trained with {key}={saved['args'].get(key)!r}, "
                    f"this trainer has {key}={mine[key]!r}: resume with the same recipe and groups"
                )
        try:
            self.dro_q = attributes.get("dro_q")
        except (FairQuantError, TypeError, ValueError) as err:
            raise ArtifactError(f"{where}: field attributes.dro_q: {err}") from None


def checkpoint_weights(checkpoint: str) -> dict[str, Any] | None:
    """The model weights of a Trainer checkpoint folder (``model.safetensors``, or shards listed in
    ``model.safetensors.index.json``); None for another form (adapters, FSDP, ``.bin``)."""
    from ..quantization.artifact_checks import load_weights, read_json

    single, index = os.path.join(checkpoint, SAFE_WEIGHTS_NAME), os.path.join(checkpoint, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        return load_weights(Path(single))
    if not os.path.isfile(index):
        return None
    weight_map = (read_json(Path(index)) or {}).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ArtifactError(f"{index} has no 'weight_map' object: the checkpoint is damaged")
    state: dict[str, Any] = {}
    for shard in sorted(set(weight_map.values())):
        state.update(load_weights(Path(checkpoint) / shard))
    return state


def to_model_keys(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint keys renamed to the model's own, as ``from_pretrained`` renames them (transformers 5
    saves some models under legacy names: a ViT's ``vit.encoder.layer.*`` for ``vit.layers.*``). A key
    that needs a many-to-one conversion is left as it is (the key check then names it)."""
    from transformers import PreTrainedModel
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    if not isinstance(model, PreTrainedModel):
        return state
    conversions = get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    out = {}
    for key, tensor in state.items():
        renamed, converter = rename_source_key(key, renamings, converters)
        out[key if converter is not None else renamed] = tensor
    return out


def _storage(tensor: Any) -> Any:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, AttributeError):  # a tensor subclass without one storage
        return id(tensor)


def load_checkpoint_weights(model: Any, checkpoint: str) -> bool:
    """Load a checkpoint's weights into ``model`` through the model's own key conversion, and only
    whole: every key of the model must be restored (a weight tied to a restored one, or one the model
    does not save, excepted), else a :class:`FairQuantError` naming the keys — training never goes on
    from a partial load. Returns False when the folder holds another form (left to the Trainer)."""
    state = checkpoint_weights(checkpoint)
    if state is None:
        return False
    state = to_model_keys(model, state)
    expected = model.state_dict()
    restored = {_storage(expected[k]) for k in state if k in expected}
    ignored = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    missing = [k for k in expected if k not in state and k not in ignored and _storage(expected[k]) not in restored]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise FairQuantError(
            f"checkpoint {checkpoint} does not hold the weights of this {type(model).__name__} (after transformers' "
            f"key conversion): {len(missing)} missing, e.g. {missing[:6]}; {len(unexpected)} unexpected, e.g. "
            f"{unexpected[:6]}. Refusing to resume: training on from a partial load would restart those weights "
            "(resume with the model, recipe and transformers version that wrote the checkpoint)"
        )
    try:
        model.load_state_dict(state, strict=False)  # strict=False only for the tied/ignored keys above
    except RuntimeError as err:  # shapes that do not fit
        raise FairQuantError(f"checkpoint {checkpoint} does not fit this {type(model).__name__}: {err}") from None
    return True


def resolve_checkpoint(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """The checkpoint folder ``Trainer.train(resume_from_checkpoint=...)`` will use (``True``: the last
    one in ``output_dir``), or None."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True:
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise MissingFileError(f"resume_from_checkpoint=True but {output_dir} holds no checkpoint-* folder")
        return last
    return str(resume_from_checkpoint)


def saved_state(checkpoint: str) -> dict[str, Any]:
    """The :class:`FairQuantState` a checkpoint folder holds (its ``trainer_state.json``)."""
    path = os.path.join(checkpoint, TRAINER_STATE_NAME)
    if not os.path.isfile(path):
        raise MissingFileError(f"{checkpoint} has no {TRAINER_STATE_NAME}: not a Trainer checkpoint folder")
    try:
        callbacks = TrainerState.load_from_json(path).stateful_callbacks or {}
    except (json.JSONDecodeError, TypeError) as err:
        raise ArtifactError(f"{path} is not a readable TrainerState ({err})") from None
    state = callbacks.get(FairQuantState.__name__)
    if isinstance(state, list):
        state = state[0] if state else None
    if not isinstance(state, dict) or "args" not in state:
        raise ArtifactError(
            f"{path} has no stateful_callbacks[{FairQuantState.__name__!r}] with 'args': the checkpoint was not "
            "written by FairQuantTrainer (or by an older hf_fairquant)"
        )
    return state
