"""The byte-level BPE tokenizer for causal LMs (``model.tokenizer: bpe``)."""

from __future__ import annotations

import pytest

from hf_fairquant.data import BPE, WORDLEVEL, train_bpe_tokenizer
from hf_fairquant.errors import FairQuantError

TEXTS = [
    "ls - list directory contents\n\n-a, --all\n       do not ignore entries starting with .",
    "ls - Verzeichnisinhalte auflisten. Einträge, die mit »..« beginnen, nicht ignorieren.",
    "ls - выводит список файлов каталога. Не скрывать файлы, начинающиеся с точки.",
    "ls - перелічити вміст каталогу; ґ, є, ї",
    "ls - εμφάνιση περιεχομένων καταλόγου",
    "ls - ディレクトリの内容をリスト表示する。. で始まる要素を無視しない",
    "ls - 列出目录内容。不要忽略以 . 开头的条目",
    "ls - 디렉터리 내용을 나열합니다",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }\t// tabs, braces",
]
UNSEEN = ["Ёжик в тумане 🦔 — «ёлки»", "漢字かな交じり文、ｶﾀｶﾅ、全角ＡＢＣ", "  leading spaces and trailing  ", "a\u0301 é e\u0301 \x00"]


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(TEXTS * 20, vocab_size=600, model_max_length=64)


def test_names_for_the_recipe():
    assert (BPE, WORDLEVEL) == ("bpe", "wordlevel")


def test_specials_bos_and_padding_side(tok):
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.unk_token is None and tok.padding_side == "right" and tok.model_max_length == 64
    ids = tok(TEXTS[0])["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids and tok.pad_token_id not in ids
    batch = tok(TEXTS[:3], padding=True)
    assert set(batch) == {"input_ids", "attention_mask"}
    shortest = min(range(3), key=lambda i: sum(batch["attention_mask"][i]))
    assert batch["input_ids"][shortest][-1] == tok.pad_token_id and batch["attention_mask"][shortest][-1] == 0
    with_eos = train_bpe_tokenizer(TEXTS, vocab_size=300, add_eos_token=True)
    assert with_eos("ls")["input_ids"][-1] == with_eos.eos_token_id
    assert len(tok(TEXTS[0] * 50, truncation=True)["input_ids"]) == 64


@pytest.mark.parametrize("text", TEXTS + UNSEEN)
def test_byte_level_decoding_is_lossless(tok, text):
    ids = tok(text)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids) == "<s>" + text


def test_save_and_autotokenizer_round_trip(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = TEXTS + UNSEEN
    assert loaded(texts)["input_ids"] == tok(texts)["input_ids"]
    padded = loaded(texts, padding=True, truncation=True, return_tensors="pt")
    assert padded["input_ids"].tolist() == tok(texts, padding=True, truncation=True, return_tensors="pt")["input_ids"].tolist()
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (1, 2, 0)
    assert loaded.padding_side == "right" and loaded.model_max_length == 64 and len(loaded) == len(tok)
    assert [loaded.decode(i, skip_special_tokens=True) for i in loaded(texts)["input_ids"]] == texts


def test_merges_learn_frequent_multibyte_text(tok):
    # Cyrillic and CJK characters are 2–3 UTF-8 bytes: trained merges give them fewer tokens than bytes
    for text in (TEXTS[2], TEXTS[5], TEXTS[6]):
        assert len(tok(text)["input_ids"]) - 1 < len(text.encode("utf-8")) / 2


def test_bad_arguments():
    with pytest.raises(FairQuantError, match=r"vocab_size must be at least 259"):
        train_bpe_tokenizer(TEXTS, vocab_size=100)
    with pytest.raises(FairQuantError, match="training texts are empty"):
        train_bpe_tokenizer(["", ""])
    with pytest.raises(FairQuantError, match="model_max_length must be at least 2"):
        train_bpe_tokenizer(TEXTS, model_max_length=1)
