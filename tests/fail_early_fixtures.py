"""Tiny local image datasets and recipes for the fail-early / whole-or-nothing tests (issue 14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value


def image_split(n: int, groups: list, seed: int = 0, num_labels: int = 3, label_values=None) -> Dataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, num_labels, n) if label_values is None else label_values
    features = Features(image=Image(), label=ClassLabel(names=[str(i) for i in range(num_labels)]),
                        group=Value("string") if isinstance(groups[0], str) else Value("int64"))
    return Dataset.from_dict(
        {"image": list(images), "label": np.asarray(labels).astype(np.int64), "group": [groups[i % len(groups)] for i in range(n)]},
        features=features,
    )


def save_data(folder: Path, train_groups: list, test_groups: list, n_train: int = 36, n_test: int = 18) -> Path:
    DatasetDict({"train": image_split(n_train, train_groups, 0), "test": image_split(n_test, test_groups, 1)}).save_to_disk(str(folder))
    return folder


def tiny_recipe(data_dir: Path, **sections) -> dict:
    """A recipe that trains a ~20k-parameter ResNet for 2 steps and audits W8: a few seconds."""
    recipe = {
        "data": {"source": str(data_dir), "group_columns": ["group"]},
        "model": {"config": {"model_type": "resnet", "num_channels": 1, "embedding_size": 8, "hidden_sizes": [8, 16],
                             "depths": [1, 1], "layer_type": "basic", "downsample_in_first_stage": False}},
        "training": {"max_steps": 2, "per_device_train_batch_size": 16, "save_strategy": "no", "use_cpu": True,
                     "seed": 0, "report_to": "none"},
        "audit": {"recipes": ["w8"], "calibration_size": 8, "n_boot": 0, "batch_size": 32},
        "explain": {"enabled": False},
    }
    for name, value in sections.items():
        if value is None:
            recipe.pop(name, None)
        elif isinstance(value, dict) and isinstance(recipe.get(name), dict):
            recipe[name] = {**recipe[name], **value}
        else:
            recipe[name] = value
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path
