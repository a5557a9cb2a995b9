"""FairQuantTrainingArguments: TrainingArguments plus groups, sampling, weighting, QAT.

Parsed by ``HfArgumentParser`` like any TrainingArguments (YAML/JSON/CLI); dict-valued fields
accept a JSON string on the command line (``--group_weighting '{"tail": 4}'``).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from ..errors import FairQuantError
from ..groups import INTERSECTION_SEPARATOR
from ..quantization import SUPPORTED_WEIGHT_BITS, QuantRecipe

GROUP_SAMPLING = ("none", "group_balanced", "class_balanced", "group_class_balanced")
GROUP_WEIGHTING = ("none", "inverse_frequency", "sqrt_inverse_frequency", "dro")
#: What the training loss averages over (``loss_unit``).
LOSS_UNITS = ("example", "token")


def _json_option(name: str, text: str) -> Any:
    """A JSON-valued option; invalid JSON names the option."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FairQuantError(f"{name}={text!r} is not valid JSON ({err.msg} at character {err.pos})") from None


@dataclass
class FairQuantTrainingArguments(TrainingArguments):
    """``TrainingArguments`` for :class:`~hf_fairquant.training.FairQuantTrainer`.

    Balanced sampling and inverse-frequency weights both favour rare groups; turned fully on
    together they count rarity twice (a measured study gave the rare group ≈95 % of the loss),
    so that combination warns: lower ``sampling_power`` or use ``sqrt_inverse_frequency``.
    """

    group_column: str = field(
        default="group", metadata={"help": "column(s) defining groups; comma-separated for intersections"}
    )
    group_sampling: str = field(
        default="none", metadata={"help": f"training sampler: one of {', '.join(GROUP_SAMPLING)}"}
    )
    sampling_power: float = field(
        default=1.0,
        metadata={"help": "0 = natural frequencies, 1 = fully balanced; sample weight ∝ count(cell)^-power"},
    )
    # typed like TrainingArguments' dict fields so HfArgumentParser takes a JSON string on the CLI
    group_weighting: dict | str | None = field(
        default="none",
        metadata={"help": f"loss weights: one of {', '.join(GROUP_WEIGHTING)} or a JSON mapping {{group: weight}}"},
    )
    dro_step_size: float = field(default=0.01, metadata={"help": "Group DRO exponentiated-gradient step size"})
    loss_unit: str = field(
        default="example",
        metadata={"help": "what the loss averages over: example (each example's mean loss counts once: group weights "
                          "and Group-DRO weigh examples) or token (a causal LM's texts count by their scored tokens)"},
    )
    quantization: dict | str | None = field(
        default=None,
        metadata={"help": "QAT recipe: a preset (w8a8, w4a8, w4, w2a8), a JSON recipe, or 'auto:<budget>' (bits per "
                  "layer allocated from group sensitivity under a mean-bits budget, e.g. auto:4.0); unset trains in full precision"},
    )
    range_update_steps: int = field(
        default=10,
        metadata={"help": "QAT: activation ranges follow the training batches every n-th optimizer step (EMA)"},
    )
    calibration_size: int = field(
        default=512, metadata={"help": "group-stratified examples that calibrate activation ranges before QAT"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_sampling not in GROUP_SAMPLING:
            raise FairQuantError(f"unknown group_sampling {self.group_sampling!r}; allowed: {list(GROUP_SAMPLING)}")
        power = self.sampling_power
        if isinstance(power, bool) or not isinstance(power, (int, float)):
            hint = " (YAML recipes convert a quoted number; in Python pass a float)" if isinstance(power, str) else ""
            raise FairQuantError(f"sampling_power must be a number in [0, 1], got {type(power).__name__} {power!r}{hint}")
        if not 0.0 <= power <= 1.0:
            raise FairQuantError(f"sampling_power must be in [0, 1], got {power!r}")
        if self.group_weighting is None:
            self.group_weighting = "none"
        if not isinstance(self.group_column, str) or not self.group_columns:
            raise FairQuantError(f"group_column must name one or more columns (comma-separated), got {self.group_column!r}")
        if "labels" in self.group_columns:
            raise FairQuantError(
                "group_column 'labels' is the label column: the trainer replaces the group column by group codes, "
                "so groups must come from another column (e.g. a copy of the labels named 'class')"
            )
        if isinstance(self.group_weighting, str) and self.group_weighting.lstrip().startswith("{"):
            self.group_weighting = _json_option("group_weighting", self.group_weighting)
        if isinstance(self.group_weighting, dict):
            bad = {k: v for k, v in self.group_weighting.items()
                   if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0}
            if bad:
                raise FairQuantError(f"group_weighting weights must be positive numbers, got {bad}")
        elif self.group_weighting not in GROUP_WEIGHTING:
            raise FairQuantError(
                f"unknown group_weighting {self.group_weighting!r}; allowed: {list(GROUP_WEIGHTING)} "
                "or a mapping {group: weight}"
            )
        if self.loss_unit not in LOSS_UNITS:
            raise FairQuantError(f"unknown loss_unit {self.loss_unit!r}; allowed: {list(LOSS_UNITS)}")
        if not self.dro_step_size > 0:
            raise FairQuantError(f"dro_step_size must be positive, got {self.dro_step_size}")
        if self.range_update_steps <= 0:
            raise FairQuantError(f"range_update_steps must be positive, got {self.range_update_steps}")
        if self.calibration_size <= 0:
            raise FairQuantError(f"calibration_size must be positive, got {self.calibration_size}")
        if isinstance(self.quantization, str) and self.quantization.lstrip().startswith("{"):
            self.quantization = _json_option("quantization", self.quantization)
        self.quantization_recipe  # parse now: unknown presets fail here
        if self.label_names is None:
            self.label_names = ["labels", self.group_code_column]
        needed = ["labels", self.group_code_column]
        if list(self.label_names) != needed and not set(needed) <= set(self.label_names):
            raise FairQuantError(
                f"label_names={list(self.label_names)} must include {needed}: the Trainer keeps only label names and "
                "model inputs, and FairQuantTrainer needs the group codes in every batch; leave label_names unset"
            )
        if (
            self.group_sampling == "group_balanced"
            and self.sampling_power == 1.0
            and self.group_weighting == "inverse_frequency"
        ):
            warnings.warn(
                "group_sampling='group_balanced' with sampling_power=1 and group_weighting='inverse_frequency' "
                "count rarity twice (the rare group dominates the loss); lower sampling_power or use "
                "'sqrt_inverse_frequency'",
                UserWarning,
                stacklevel=2,
            )

    @property
    def group_columns(self) -> list[str]:
        return [c.strip() for c in self.group_column.split(",") if c.strip()]

    @property
    def group_code_column(self) -> str:
        """The int64 column of group codes the trainer adds (the group column itself if single)."""
        return INTERSECTION_SEPARATOR.join(self.group_columns)

    @property
    def quantization_budget(self) -> float | None:
        """The mean-bits budget of ``quantization="auto:<budget>"`` (None for a fixed recipe)."""
        if not (isinstance(self.quantization, str) and self.quantization.strip().lower().startswith("auto:")):
            return None
        text = self.quantization.strip()[len("auto:"):]
        try:
            budget = float(text)
        except ValueError:
            budget = float("nan")
        low, high = min(SUPPORTED_WEIGHT_BITS), max(SUPPORTED_WEIGHT_BITS)
        if not low <= budget <= high:
            raise FairQuantError(
                f"quantization={self.quantization!r}: 'auto:<budget>' needs a number of mean weight bits "
                f"between {low} and {high}, e.g. 'auto:4.0'"
            )
        return budget

    @property
    def quantization_recipe(self) -> QuantRecipe | None:
        """The fixed QAT recipe; None when training in float or when bits are allocated (``auto:``)."""
        if self.quantization is None or self.quantization_budget is not None:
            return None
        return QuantRecipe.parse(self.quantization)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if isinstance(self.quantization, QuantRecipe):
            data["quantization"] = self.quantization.to_dict()
        return data
