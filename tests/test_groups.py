import math

import numpy as np
import pytest

from hf_fairquant.errors import FairQuantError
from datasets import Dataset, DatasetDict
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_fairquant import GroupSpec
from hf_fairquant.groups import stratified_indices


def _ds(**columns):
    return Dataset.from_dict(columns)


def test_names_codes_round_trip_for_strings_and_ints():
    ds = _ds(group=["b", "a", "b", "c"], labels=[0, 1, 0, 1])
    spec = GroupSpec("group").fit(ds)
    assert spec.names == ["a", "b", "c"]
    codes = spec.encode(ds)
    assert codes.tolist() == [1, 0, 1, 2]
    assert spec.decode(codes) == ["b", "a", "b", "c"]

    ints = GroupSpec("g").fit(_ds(g=[10, 2, 2, 33], labels=[0] * 4))
    assert ints.names == ["2", "10", "33"]  # numeric order, not string order
    assert ints.decode(ints.encode(_ds(g=[33, 2], labels=[0, 0]))) == ["33", "2"]


def test_intersections_round_trip():
    ds = _ds(sex=["f", "m", "f", "m", "f"], race=["x", "x", "y", "y", "x"], labels=[0] * 5)
    spec = GroupSpec(["sex", "race"]).fit(ds)
    assert spec.name == "sex×race"
    assert spec.names == ["f×x", "f×y", "m×x", "m×y"]
    assert spec.group_names(ds) == ["f×x", "m×x", "f×y", "m×y", "f×x"]
    assert spec.code_of("m×y") == 3
    assert GroupSpec.from_dict(spec.to_dict()) == spec


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3)), min_size=1, max_size=30))
def test_encode_decode_is_identity(rows):
    ds = _ds(s=[r[0] for r in rows], i=[r[1] for r in rows], labels=[0] * len(rows))
    spec = GroupSpec(["s", "i"]).fit(ds)
    names = spec.decode(spec.encode(ds))
    assert names == [f"{s}×{i}" for s, i in rows]
    assert len(spec.names) == len(set(rows))


def test_separator_in_intersection_values_is_rejected():
    ds = _ds(s=["a×b", "a"], i=["c", "b×c"], labels=[0, 0])
    with pytest.raises(ValueError, match="'a×b' contains '×'"):
        GroupSpec(["s", "i"]).fit(ds)
    assert GroupSpec("s").fit(ds).names == ["a", "a×b"]  # one column: no ambiguity


def test_codes_are_stable_across_row_order():
    a = GroupSpec("g").fit(_ds(g=["z", "y", "x"], labels=[0] * 3))
    b = GroupSpec("g").fit(_ds(g=["x", "z", "y"], labels=[0] * 3))
    assert a.names == b.names


def test_counts_per_split_include_empty_groups():
    dsd = DatasetDict(train=_ds(g=["a", "a", "b"], labels=[0] * 3), test=_ds(g=["a"], labels=[0]))
    spec = GroupSpec("g").fit(*dsd.values())
    assert spec.counts(dsd) == {"train": {"a": 2, "b": 1}, "test": {"a": 1, "b": 0}}


def test_weights_schemes():
    ds = _ds(g=["a"] * 90 + ["b"] * 10, labels=[0] * 100)
    spec = GroupSpec("g").fit(ds)
    inv = spec.weights(ds, "inverse_frequency")
    assert inv["b"] / inv["a"] == pytest.approx(9.0)
    assert 90 * inv["a"] + 10 * inv["b"] == pytest.approx(100)  # mean weight per example is 1
    sq = spec.weights(ds, "sqrt_inverse_frequency")
    assert sq["b"] / sq["a"] == pytest.approx(3.0)
    assert spec.weights(ds, {"a": 1.0, "b": 2.5}) == {"a": 1.0, "b": 2.5}


@pytest.mark.parametrize(
    "scheme, message",
    [("squared", "unknown group weighting 'squared'"), ({"a": 1.0}, r"missing \['b'\]"), ({"a": 1, "b": -1}, ">= 0")],
)
def test_bad_weights(scheme, message):
    ds = _ds(g=["a", "b"], labels=[0, 0])
    with pytest.raises(ValueError, match=message):
        GroupSpec("g").fit(ds).weights(ds, scheme)


def test_missing_group_column_names_it_and_the_alternatives():
    with pytest.raises(ValueError, match=r"group column\(s\) \['sex'\] not found.*available columns: \['g', 'labels'\]"):
        GroupSpec("sex").validate(_ds(g=["a"], labels=[0]))


def test_missing_label_column():
    with pytest.raises(ValueError, match=r"label column 'labels' or 'label' not found.*\['g', 'y'\]"):
        GroupSpec("g").validate(_ds(g=["a"], y=[0]))


def test_label_or_labels():
    assert GroupSpec("g").validate(_ds(g=["a", "b"], label=[1, 0])).tolist() == [1, 0]
    assert GroupSpec("g").validate(_ds(g=["a", "b"], labels=[0, 1], label=[1, 0])).tolist() == [0, 1]


def test_labels_through_a_transform_only():
    ds = _ds(g=["a", "b"], y=[3, 4]).with_transform(lambda b: {"labels": [v - 3 for v in b["y"]], "g": b["g"]})
    assert GroupSpec("g").validate(ds, num_labels=2).tolist() == [0, 1]


@pytest.mark.parametrize("values, expected", [([0.0, 1.0, 2.0], [0, 1, 2]), ([True, False, True], [1, 0, 1])])
def test_integral_floats_and_bools_are_cast(values, expected):
    assert GroupSpec("g").validate(_ds(g=["a"] * 3, label=values), num_labels=3).tolist() == expected


def test_fractional_float_label_is_refused():
    with pytest.raises(FairQuantError, match=r"label column 'label'.*value 0.5 at row 1.*integer class ids"):
        GroupSpec("g").validate(_ds(g=["a", "a"], label=[1.0, 0.5]))


def test_string_labels_map_through_label2id():
    label2id = {"cat": 0, "dog": 1}
    ds = _ds(g=["a", "b", "a"], label=["dog", "cat", "dog"])
    assert GroupSpec("g").validate(ds, num_labels=2, label2id=label2id).tolist() == [1, 0, 1]
    with pytest.raises(FairQuantError, match=r"label column 'label'.*\['bird'\].*allowed names: \['cat', 'dog'\]"):
        GroupSpec("g").validate(_ds(g=["a"], label=["bird"]), label2id=label2id)
    with pytest.raises(FairQuantError, match=r"no config.label2id"):
        GroupSpec("g").validate(_ds(g=["a"], label=["bird"]))


def test_eval_only_groups_are_listed():
    train, test = _ds(g=["a", "a"], labels=[0, 0]), _ds(g=["a", "b"], labels=[0, 0])
    assert GroupSpec("g").fit(train, test).eval_only_groups(train, {"test": test}) == ["b"]
    assert GroupSpec("g").fit(train, test).eval_only_groups(test, {"train": train}) == []


@pytest.mark.parametrize("bad", [None, math.nan])
def test_missing_group_values(bad):
    values = ["a", bad, "b"] if bad is None else [1.0, bad, 2.0]
    with pytest.raises(ValueError, match=r"group column 'g'.*1 missing \(None/NaN\) value\(s\), first at row 1"):
        GroupSpec("g").validate(_ds(g=values, labels=[0, 1, 0]), split="train")


def test_labels_outside_the_models_classes():
    with pytest.raises(ValueError, match=r"labels \[5, 7\].*outside the model's classes 0\.\.4"):
        GroupSpec("g").validate(_ds(g=["a"] * 3, labels=[5, 1, 7]), num_labels=5)


def test_empty_split():
    empty = Dataset.from_dict({"g": [], "labels": []})
    with pytest.raises(ValueError, match="split 'test' is empty"):
        GroupSpec("g").validate(empty, split="test")


def test_group_without_training_examples():
    train, test = _ds(g=["a", "a"], labels=[0, 0]), _ds(g=["a", "b"], labels=[0, 0])
    spec = GroupSpec("g").fit(train, test)
    with pytest.raises(ValueError, match=r"group\(s\) \['b'\].*split 'test'.*no training examples"):
        spec.check_covered(train, {"test": test})


def test_unknown_group_at_encode_time():
    spec = GroupSpec("g", values=["a"])
    with pytest.raises(ValueError, match=r"\['zz'\].*not among the fitted groups \['a'\]"):
        spec.encode(_ds(g=["zz"], labels=[0]))


def test_stratified_indices_give_minorities_their_share():
    codes = np.array([0] * 1000 + [1] * 20 + [2] * 5)
    rows = stratified_indices(codes, 60, seed=1)
    picked = np.bincount(codes[rows], minlength=3)
    assert picked.tolist() == [35, 20, 5]
    assert len(set(rows.tolist())) == 60
    assert np.array_equal(rows, stratified_indices(codes, 60, seed=1))


# ---------------------------------------------------------------- issue 26: label meaning, kinds, shapes
def _labelled(names, labels=(0, 1, 2, 0)):
    from datasets import ClassLabel, Features, Value

    features = Features(labels=ClassLabel(names=list(names)), group=Value("string"))
    return Dataset.from_dict({"labels": list(labels), "group": ["a", "b"] * (len(labels) // 2)}, features=features)


def test_permuted_class_names_are_refused_with_the_mapping_that_fixes_them():
    model = {"cat": 0, "dog": 1, "bird": 2}
    with pytest.raises(FairQuantError, match=r"dataset id → model id \{0: 1, 1: 0\}.*align_labels_with_mapping"):
        GroupSpec("group").validate(_labelled(["dog", "cat", "bird"]), num_labels=3, split="eval", label2id=model)
    with pytest.raises(FairQuantError, match=r"\['fish'\] are not among the model's classes"):
        GroupSpec("group").validate(_labelled(["cat", "fish", "bird"]), num_labels=3, label2id=model)
    with pytest.raises(FairQuantError, match="dataset id → model id"):  # id2label given directly (no label2id)
        GroupSpec("group").validate(_labelled(["dog", "cat", "bird"]), id2label={0: "cat", 1: "dog", 2: "bird"})


def test_matching_or_placeholder_class_names_pass():
    spec = GroupSpec("group")
    assert spec.validate(_labelled(["Cat", "DOG", "bird"]), num_labels=3, label2id={"cat": 0, "dog": 1, "bird": 2}).tolist() == [0, 1, 2, 0]
    # the model has more classes than the data: its names keep their ids
    spec.validate(_labelled(["cat", "dog"], labels=(0, 1)), label2id={"cat": 0, "dog": 1, "bird": 2})
    # transformers' LABEL_i and ClassLabel(num_classes=n)'s "i" say nothing: not compared
    spec.validate(_labelled(["dog", "cat", "bird"]), label2id={"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2})
    spec.validate(_labelled(["0", "1", "2"]), label2id={"cat": 0, "dog": 1, "bird": 2})


def test_int_and_str_groups_across_splits_are_refused_not_split_in_two():
    ints, strs = _ds(g=[1, 2, 1, 2], labels=[0] * 4), _ds(g=["1", "2", "1", "2"], labels=[0] * 4)
    with pytest.raises(FairQuantError, match=r"group column 'g' holds values of different types: numbers, e\.g\. 1 "
                                             r"\(in dataset 1 of 2\), strings, e\.g\. '1' \(in dataset 2 of 2\).*cast_column"):
        GroupSpec("g").fit(ints, strs)
    spec = GroupSpec("g").fit(ints)
    with pytest.raises(FairQuantError, match=r"'1' \(str\), '2' \(str\) of column\(s\) \['g'\] are not among the fitted groups: they print like 1 \(int\), 2 \(int\)"):  # was: "['1'] not among ['1', '2']"
        spec.encode(strs)


def test_a_row_with_the_wrong_number_of_entries_names_the_columns_not_a_contradiction():
    spec = GroupSpec("g").fit(_ds(g=["a×b", "c"], labels=[0, 0]))
    assert spec.encode(["a×b", "c"]).tolist() == [0, 1]
    with pytest.raises(FairQuantError, match=r"\('a', 'b'\) has 2 entries; GroupSpec\(\['g'\]\) needs one per column"):
        spec.encode([("a", "b")])  # was: "['a×b'] … are not among the fitted groups ['a×b']"


def test_group_weights_that_are_all_zero_are_refused():
    ds = _ds(g=["a", "b", "a"], labels=[0, 0, 0])
    spec = GroupSpec("g").fit(ds)
    with pytest.raises(FairQuantError, match="every example weight 0"):
        spec.weights(ds, {"a": 0, "b": 0})
    assert spec.weights(ds, {"a": 0, "b": 1.5}) == {"a": 0.0, "b": 1.5}


def test_float_groups_sort_numerically():
    spec = GroupSpec("g").fit(_ds(g=[10.0, 2.5, 1.0, 2.5], labels=[0] * 4))
    assert spec.names == ["1.0", "2.5", "10.0"]  # was '1.0', '10.0', '2.5'


def test_duplicated_group_columns_and_non_names_are_refused():
    with pytest.raises(FairQuantError, match=r"name \['a'\] more than once"):
        GroupSpec(["a", "a"])
    with pytest.raises(FairQuantError, match="a group column name or a list of names, got int 123"):
        GroupSpec(123)
    with pytest.raises(FairQuantError, match=r"needs a mapping with 'columns'.*got \['values'\]"):
        GroupSpec.from_dict({"values": [["a"]]})
    with pytest.raises(FairQuantError, match="needs a mapping with 'columns'"):
        GroupSpec.from_dict(["group"])


def test_unhashable_group_values_name_the_column_and_value():
    ds = _ds(g=[[1, 2], [3]], labels=[0, 0])
    with pytest.raises(FairQuantError, match=r"group column 'g' holds list values \(row 0: \[1, 2\]\)"):
        GroupSpec("g").fit(ds)


def test_a_dataset_dict_where_one_split_is_expected_lists_the_splits():
    dd = DatasetDict(train=_ds(group=["a"], labels=[0]), test=_ds(group=["a"], labels=[0]))
    with pytest.raises(FairQuantError, match=r"got a DatasetDict with splits \['train', 'test'\]: pass one of them, e\.g\. ds\['train'\]"):
        GroupSpec("group").validate(dd, num_labels=2)
    with pytest.raises(FairQuantError, match="splits"):
        GroupSpec("group").fit(dd)
    assert GroupSpec("group").fit(dd["train"]).counts(dd) == {"train": {"a": 1}, "test": {"a": 1}}  # counts takes both
