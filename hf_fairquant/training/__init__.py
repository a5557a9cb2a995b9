"""Mitigation: FairQuantTrainer (QAT + group-balanced sampling + group-weighted loss)."""

from .arguments import GROUP_SAMPLING, GROUP_WEIGHTING, FairQuantTrainingArguments
from .sampling import GroupBalancedSampler, cell_codes, sampling_weights, target_proportions
from .state import FairQuantState
from .trainer import FairQuantTrainer
from .weighting import GroupDROWeights, StaticGroupWeights

__all__ = [
    "GROUP_SAMPLING",
    "GROUP_WEIGHTING",
    "FairQuantState",
    "FairQuantTrainer",
    "FairQuantTrainingArguments",
    "GroupBalancedSampler",
    "GroupDROWeights",
    "StaticGroupWeights",
    "cell_codes",
    "sampling_weights",
    "target_proportions",
]
