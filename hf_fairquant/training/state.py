"""The trainer's own checkpoint state through transformers' public callback API.

:class:`FairQuantState` is a ``TrainerCallback`` with ``ExportableState``: transformers writes its
:meth:`state` into every checkpoint's ``trainer_state.json`` (``stateful_callbacks``). It carries
what a resumed run must agree on — the QAT recipe and the groups — and owns the Group-DRO weights,
so a checkpoint restores them exactly. :func:`saved_state` reads it back from a checkpoint folder.
"""

from __future__ import annotations

import json
import os
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState, TrainerState
from transformers.trainer_utils import get_last_checkpoint

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
        mine = self.state()["args"]
        for key in ("group_columns", "group_names", "quantization"):
            if saved["args"].get(key) != mine[key]:
                raise FairQuantError(
                    f"checkpoint {checkpoint} was trained with {key}={saved['args'].get(key)!r}, "
                    f"this trainer has {key}={mine[key]!r}: resume with the same recipe and groups"
                )
        self.dro_q = saved.get("attributes", {}).get("dro_q")


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
