"""A tiny multilingual causal-LM set-up for the language-model tests: texts in three scripts, a
byte-level BPE tokenizer trained on them, a 2-layer Llama from config (seeded)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from datasets import Dataset

SENTENCES = {
    "en": ["the quick brown fox jumps over the lazy dog", "list directory contents in long format",
           "copy files and directories recursively", "print the name of the current working directory"],
    "ru": ["съешь же ещё этих мягких французских булок", "вывести содержимое каталога",
           "копировать файлы и каталоги", "показать имя текущего рабочего каталога"],
    "ja": ["ディレクトリの内容をリスト表示する", "ファイルとディレクトリをコピーする", "現在の作業ディレクトリ名を表示する",
           "いろはにほへと ちりぬるを"],
}


def lm_rows(n: int = 48, seed: int = 0) -> dict[str, list]:
    """``n`` texts (one to three sentences each) cycling over the languages, with a ``language`` column."""
    rng = np.random.default_rng(seed)
    languages = list(SENTENCES)
    texts, groups = [], []
    for i in range(n):
        language = languages[i % len(languages)]
        k = int(rng.integers(1, 4))
        texts.append(" ".join(SENTENCES[language][int(j)] for j in rng.integers(0, 4, size=k)))
        groups.append(language)
    return {"text": texts, "language": groups}


@lru_cache(maxsize=1)
def lm_tokenizer():
    from hf_fairquant.data import train_bpe_tokenizer

    return train_bpe_tokenizer(lm_rows(96)["text"], vocab_size=320, model_max_length=64)


def lm_dataset(n: int = 48, seed: int = 0, tokenizer=None) -> Dataset:
    """Tokenised texts (``input_ids``, ``attention_mask``) and their ``language``."""
    tok = tokenizer or lm_tokenizer()
    raw = Dataset.from_dict(lm_rows(n, seed))
    return raw.map(lambda b: tok(b["text"], truncation=True, max_length=64), batched=True, remove_columns=["text"])


def tiny_llama_lm(tokenizer=None, seed: int = 0, hidden_size: int = 32):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer or lm_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(config).eval()


def direct_token_nll(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per example, (summed next-token NLL, scored tokens), one unpadded example at a time with
    log_softmax: the reference the task's batched outputs are checked against."""
    sums, counts = [], []
    for row in dataset:
        ids = torch.tensor(row["input_ids"])[None]
        labels = torch.tensor(row["labels"])[None] if "labels" in row else ids
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits.double(), -1)[0]
        total, n = 0.0, 0
        for t in range(ids.shape[1] - 1):
            target = int(labels[0, t + 1])
            if target != -100:
                total -= float(logp[t, target])
                n += 1
        sums.append(total)
        counts.append(n)
    return np.array(sums), np.array(counts)
