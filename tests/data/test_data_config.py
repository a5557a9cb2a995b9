"""DataConfig's column defaults follow the source (issue 21: ``DataConfig(source="adult")`` asked
for an ``image`` column) without overriding what a user names; ``source_options`` reach the loader."""

from __future__ import annotations

import dataclasses

import pytest
from datasets import Dataset, DatasetDict

from hf_fairquant.data import AUTO, OFFLINE_SOURCES, SOURCE_COLUMNS, DataConfig, check_subset, load_raw_grouped_dataset
from hf_fairquant.errors import FairQuantError


def _columns(config: DataConfig) -> tuple:
    return config.image_column, config.text_column, config.label_column, config.group_columns


@pytest.mark.parametrize(
    "source, expected",
    [
        ("fashion_mnist", ("image", None, "label", ["group"])),
        ("digits", ("image", None, "label", ["group"])),
        ("adult", (None, "text", "label", ["sex", "race"])),
        ("adult_sensitive", (None, "text", "label", ["sex", "race"])),
        ("manpages", (None, "text", None, ["language"])),
        ("stereoset", (None, "context", "label", ["bias_type"])),
        ("crows_pairs", (None, "context", "label", ["bias_type"])),
        ("HuggingFaceM4/FairFace", ("image", None, "label", ["group"])),  # Hub ids and files: as before
        ("data/train.csv", ("image", None, "label", ["group"])),
    ],
)
def test_defaults_follow_the_source(source, expected):
    assert _columns(DataConfig(source=source)) == expected


def test_every_offline_source_has_its_columns():
    assert set(SOURCE_COLUMNS) == set(OFFLINE_SOURCES)


def test_explicit_values_win():
    config = DataConfig(source="adult", text_column="text", label_column="income_label", group_columns="sex")
    assert _columns(config) == (None, "text", "income_label", ["sex"])
    # naming only the image column means "an image model": the source's text column is not added
    assert _columns(DataConfig(source="adult", image_column="photo"))[:2] == ("photo", None)
    # naming only the text column on an image-default source drops the image guess
    assert _columns(DataConfig(source="user/bios", text_column="hard_text"))[:2] == (None, "hard_text")
    # explicit None stays None; the recipe form of the Adult recipe is unchanged
    adult_recipe = DataConfig(source="adult", text_column="text", image_column=None, label_column="label", group_columns=["sex", "race"])
    assert adult_recipe == DataConfig(source="adult")
    fairface = DataConfig(source="HuggingFaceM4/FairFace", label_column="gender", group_columns=["race"], image_column="image")
    assert _columns(fairface) == ("image", None, "gender", ["race"])
    assert DataConfig(source="manpages", label_column="label").label_column == "label"


def test_resolved_config_round_trips():
    config = DataConfig(source="manpages")
    assert dataclasses.replace(config) == config
    assert DataConfig(**dataclasses.asdict(config)) == config
    assert AUTO not in _columns(config)


def test_source_options(tmp_path):
    assert DataConfig(source="manpages", source_options='{"languages": "de,ja", "max_pages": 3}').source_options == {
        "languages": "de,ja", "max_pages": 3}
    assert DataConfig().source_options == {} and DataConfig(source_options="").source_options == {}
    with pytest.raises(FairQuantError, match="source_options must be a JSON object"):
        DataConfig(source_options="{languages: de}")
    with pytest.raises(FairQuantError, match="must be a mapping"):
        DataConfig(source_options="[1, 2]")
    with pytest.raises(FairQuantError, match=r"\['language'\] are not options of the 'manpages' source; allowed: .*'languages'"):
        check_subset(DataConfig(source="manpages", source_options={"language": "de"}))
    with pytest.raises(FairQuantError, match="data.subset or data.source_options.name"):
        check_subset(DataConfig(source="user/x", subset="a", source_options={"name": "b"}))
    # a local dataset gets its options through load_dataset
    DatasetDict(train=Dataset.from_dict({"text": ["a", "b"], "label": [0, 1], "group": ["x", "y"]}),
                test=Dataset.from_dict({"text": ["c"], "label": [1], "group": ["x"]})).save_to_disk(tmp_path / "d")
    raw, spec = load_raw_grouped_dataset(DataConfig(source=str(tmp_path / "d"), text_column="text"))
    assert spec.names == ["x", "y"] and len(raw["train"]) == 2


def test_a_source_without_labels_validates_groups_only(tmp_path):
    DatasetDict(train=Dataset.from_dict({"text": ["a", "b"], "language": ["de", "ja"]}),
                test=Dataset.from_dict({"text": ["c"], "language": ["de"]})).save_to_disk(tmp_path / "lm")
    config = DataConfig(source=str(tmp_path / "lm"), text_column="text", label_column=None, group_columns=["language"])
    raw, spec = load_raw_grouped_dataset(config)
    assert spec.names == ["de", "ja"]
    with pytest.raises(FairQuantError, match="group column"):
        load_raw_grouped_dataset(dataclasses.replace(config, group_columns=["script"]))


def test_cli_builds_the_options(capsys):
    from hf_fairquant.cli import _from_namespace, build_parser

    args = build_parser(["audit"]).parse_args(
        ["audit", "--model", "m", "--output-dir", "o", "--source", "manpages", "--source_options", '{"max_pages": 3}'])
    config = _from_namespace(DataConfig, args)
    assert _columns(config) == (None, "text", None, ["language"]) and config.source_options == {"max_pages": 3}
    args = build_parser(["audit"]).parse_args(["audit", "--model", "m", "--output-dir", "o", "--source", "adult"])
    assert _columns(_from_namespace(DataConfig, args)) == (None, "text", "label", ["sex", "race"])
