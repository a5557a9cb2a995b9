"""Issue 14, item 5: fuzzed recipes and dataset shapes either run or raise FairQuantError before
the first forward pass — never another exception, never a half-written output folder.

Most examples stop at the first forward pass (a hook raises ``_Reached``): everything a run
checks has run by then. A few examples run a whole tiny pipeline.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import yaml
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hf_fairquant.run.runner as pipeline
from hf_fairquant.errors import FairQuantError
from hf_fairquant.run import dry_run, load_recipe, run
from tests.fail_early_fixtures import save_data, tiny_recipe

FUZZ = settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))


class _Reached(Exception):
    """The run got to its first forward pass: every check before it passed."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return save_data(tmp_path_factory.mktemp("fuzz") / "data", ["a", "b"], ["a", "b"], n_train=24, n_test=12)


@contextlib.contextmanager
def _watch_forward(stop: bool):
    """Record forward passes of every model the run builds; with ``stop``, the first one ends the run."""
    seen: list[int] = []
    real = pipeline.build_model

    def hook(*_):
        seen.append(1)
        if stop:
            raise _Reached

    def build(*args, **kwargs):
        model = real(*args, **kwargs)
        model.register_forward_pre_hook(hook)
        return model

    with mock.patch.object(pipeline, "build_model", build):
        yield seen


def _outcome(recipe_dict: dict, stop: bool = True) -> tuple[str, list[int], Path]:
    """Write, load, dry-run and run a recipe in a fresh folder; return what happened."""
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        return _outcome_in(work, recipe_dict, stop)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _outcome_in(work: Path, recipe_dict: dict, stop: bool) -> tuple[str, list[int], Path]:
    out = work / "out"
    (work / "r.yaml").write_text(yaml.safe_dump(recipe_dict))
    with _watch_forward(stop) as seen:
        try:
            recipe = load_recipe(work / "r.yaml", output_dir=str(out))
            dry_run(recipe)
            run(recipe, echo=lambda *_: None)
            result = "ok"
        except FairQuantError as err:
            result = f"error: {err}"
        except _Reached:
            result = "reached forward"
    leftovers = [p.name for p in work.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers  # no temporary folder survives, whatever happened
    if result.startswith("error"):
        assert not seen, f"FairQuantError after {len(seen)} forward pass(es): {result}"
        assert not out.exists(), "a failed run left an output folder"
    elif result == "reached forward":
        assert not out.exists()
    else:
        assert (out / "results.json").is_file() and (out / "report.md").is_file()
    return result, seen, out


MITIGATIONS = [
    {"quantization": "w4", "max_steps": 1},
    {"quantization": "w4a8", "calibration_size": 1},
    {"quantization": "w4", "group_column": "labels"},
    {"quantization": "w4", "group_column": "sex"},
    {"quantization": "auto:9"},
    {"quantization": {"preset": "w4", "weight_bits": 2}},
    {"quantization": "w4", "label_names": ["labels"]},
    {"quantization": "w4", "learning_rate": "2e-3", "sampling_power": "0.5"},
    {"group_sampling": "group_balanced"},
]
FIELDS = {
    ("training", "learning_rate"): [1e-3, "5e-4", "1e-3", "fast", -1, None, [0.1]],
    ("training", "max_steps"): [1, "2", 2.5, "1e0", "x"],
    ("training", "per_device_train_batch_size"): [8, "8", 0, 2.5],
    ("training", "lr_scheduler_type"): ["linear", "zigzag", 3],
    ("audit", "recipes"): [["w8"], "w8,w4", [{"preset": "w4", "overrides": {"classifier*": "w8"}}], ["w4", "w4"],
                           [{"preset": "w4", "weight_bits": 8}], ["w3"], [], [{"weight_bits": 2, "name": "w8"}], 5,
                           [{"preset": "w4", "overrides": {"no_such_module*": "w8"}}]],
    ("audit", "n_boot"): [0, 10, "1e3", -1, "many", 2.5],
    ("audit", "confidence_level"): [0.9, "0.95", 1.5, 0, "x"],
    ("audit", "calibration_size"): [8, "16", 0, 1, 2, -5],
    ("audit", "batch_size"): [32, 0, "16", 1.5],
    ("explain", "enabled"): [True, False, "yes", 3],
    ("explain", "examples_per_group"): [None, 4, "all", 256, 0, "some", "4"],
    ("explain", "eigen_method"): ["lanczos", "power", "qr"],
    ("explain", "parameters"): ["quantized", "all", "some"],
    ("explain", "recipe"): [None, "w8", "w2a8", 3],
    ("explain", "tol"): [1e-3, "1e-3", 0, "tight"],
    ("data", "source"): ["digts", "fashion-mnist", "./missing", "", 3],
    ("data", "group_columns"): [["group"], "group", ["sex"], [], [1]],
    ("data", "eval_split"): ["test", "train", "validation"],
    ("data", "long_tail_fraction"): [0.5, "0.5", 0, 2],
    ("model", "config"): ["resnet", [1, 2], {"model_type": "nope"}],
    ("mitigation", None): MITIGATIONS,
    ("card", "tags"): [["x"], "x", 3],
}
KEYS = sorted(FIELDS, key=str)


@st.composite
def recipe_changes(draw):
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, min_size=1, max_size=4))
    return {k: draw(st.sampled_from(FIELDS[k])) for k in keys}


def _apply(base: dict, changes: dict) -> dict:
    recipe = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for (section, key), value in changes.items():
        if key is None:
            recipe[section] = value
        else:
            recipe.setdefault(section, {})
            recipe[section] = {**recipe[section], key: value}
    return recipe


@FUZZ
@given(changes=recipe_changes())
def test_fuzzed_recipe_fields_fail_before_the_first_forward_or_reach_it(data_dir, changes):
    result, _, _ = _outcome(_apply(tiny_recipe(data_dir), changes))
    assert result == "reached forward" or result.startswith("error: ")


# ---------------------------------------------------------------------------- dataset shapes
GROUP_POOLS = {
    "str": ["a", "b", "c"],
    "int": [0, 1, 2],
    "bool": [False, True],
    "pipe": ["a|b", "c", "d e"],
    "with_none": ["a", None, "b"],
}


@st.composite
def dataset_shapes(draw):
    kind = draw(st.sampled_from(sorted(GROUP_POOLS)))
    pool = GROUP_POOLS[kind]
    train = draw(st.lists(st.sampled_from(pool), unique=True, min_size=1, max_size=len(pool)))
    test = draw(st.lists(st.sampled_from(pool), unique=True, min_size=1, max_size=len(pool)))
    labels = draw(st.sampled_from(LABEL_KINDS))
    return kind, train, test, labels


#: Label dtypes the fuzz draws: ints, floats as pandas gives them (0.0/1.0), bools and class-name
#: strings (the input layer casts integral floats and bools, maps names through config.label2id,
#: and refuses anything else with a FairQuantError).
LABEL_KINDS = ["int", "float", "bool", "str"]


def _labels(n: int, kind: str, rng: np.random.Generator) -> tuple[list, Any]:
    codes = rng.integers(0, 3, n)
    if kind == "int":
        return codes, ClassLabel(names=["0", "1", "2"])
    if kind == "float":  # what pandas gives after a NaN somewhere
        return codes.astype(float).tolist(), Value("float64")
    if kind == "bool":
        return (codes % 2).astype(bool).tolist(), Value("bool")
    return [["zero", "one", "two"][c] for c in codes], Value("string")


def _split(n: int, groups: list, seed: int, label_kind: str = "int") -> Dataset:
    rng = np.random.default_rng(seed)
    present = [g for g in groups if g is not None]
    value = Value("bool") if present and isinstance(present[0], bool) else (
        Value("int64") if present and isinstance(present[0], int) else Value("string"))
    labels, label_feature = _labels(n, label_kind, rng)
    features = Features(image=Image(), label=label_feature, group=value)
    return Dataset.from_dict(
        {"image": list(rng.integers(0, 255, (n, 8, 8), dtype=np.uint8)), "label": labels,
         "group": [groups[i % len(groups)] for i in range(n)]},
        features=features,
    )


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(shape=dataset_shapes())
def test_fuzzed_dataset_shapes_fail_before_the_first_forward_or_reach_it(shape):
    kind, train_groups, test_groups, label_kind = shape
    folder = Path(tempfile.mkdtemp(prefix="fuzz-data-")) / "d"
    splits = {"train": _split(18, train_groups, 0, label_kind), "test": _split(9, test_groups, 1, label_kind)}
    DatasetDict(splits).save_to_disk(str(folder))
    try:
        result, _, _ = _outcome(tiny_recipe(folder, audit={"recipes": ["w8a8"], "calibration_size": 8}))
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    uncovered = {g for g in test_groups if g is not None} - {g for g in train_groups if g is not None}
    if label_kind != "int":
        assert result == "reached forward" or result.startswith("error: "), result
    elif None in train_groups or None in test_groups:
        assert "missing (None/NaN) value" in result
    else:  # groups seen only in the test split are audited as eval-only groups (no mitigation here)
        assert result == "reached forward", (result, uncovered)


# ---------------------------------------------------------------------------- a few whole runs
@settings(max_examples=3, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    recipes=st.sampled_from([["w8"], ["w8a8", "w4"], [{"preset": "w4", "overrides": {"classifier*": "w8"}}]]),
    n_boot=st.sampled_from([0, "20"]),
    explain=st.sampled_from([{"enabled": False}, {"enabled": True, "examples_per_group": 4, "probes": 2, "batch_size": "16"}]),
    test_groups=st.sampled_from([["a", "b"], ["a"]]),
)
def test_a_few_whole_tiny_runs_succeed_or_fail_cleanly(recipes, n_boot, explain, test_groups):
    folder = save_data(Path(tempfile.mkdtemp(prefix="fuzz-run-")) / "d", ["a", "b"], test_groups, n_train=24, n_test=12)
    recipe = tiny_recipe(folder, audit={"recipes": recipes, "n_boot": n_boot, "calibration_size": 8}, explain=explain)
    try:
        result, seen, out = _outcome(recipe, stop=False)
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    assert result == "ok", result
    assert seen  # it really ran
