"""Tokenizers trained offline on a training split (``tokenizers``), for text models built from a
config: saved as a standard ``PreTrainedTokenizerFast``, so ``AutoTokenizer.from_pretrained(folder)``
loads them wherever the model goes.

- :func:`train_wordlevel_tokenizer` (``model.tokenizer: wordlevel``), for classifiers: words are
  split on whitespace and '.' (removed), so a serialised field value such as ``State-gov`` or
  ``40`` stays one token; words seen fewer than ``min_frequency`` times map to ``[UNK]``.
  BERT-style specials: ``[CLS] … [SEP]``, ``[PAD]``, ``[MASK]``.
- :func:`train_bpe_tokenizer` (``model.tokenizer: bpe``), for causal LMs: byte-level BPE (GPT-2's
  scheme), so every string — CJK, Cyrillic, code, emoji — encodes without an unknown token and
  decodes back to itself byte for byte.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..errors import FairQuantError

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
#: ``ModelSection.tokenizer`` value that trains a WordLevel tokenizer on the training split.
WORDLEVEL = "wordlevel"
#: ``ModelSection.tokenizer`` value that trains a byte-level BPE tokenizer on the training split.
BPE = "bpe"
#: The byte-level BPE tokenizer's specials (Llama's names; no ``unk``: every byte has a token).
BPE_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


def train_wordlevel_tokenizer(
    texts: Iterable[str], model_max_length: int = 128, min_frequency: int = 1, vocab_size: int = 30_000
) -> Any:
    """Train on ``texts`` → ``PreTrainedTokenizerFast`` (pad/unk/cls/sep/mask set, ``model_max_length``).

    The tokenizer returns ``input_ids`` and ``attention_mask`` only (no ``token_type_ids``), so
    it feeds BERT and DistilBERT alike.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if model_max_length < 3:
        raise FairQuantError(f"model_max_length must be at least 3 ([CLS] token [SEP]), got {model_max_length}")
    specials = list(SPECIAL_TOKENS.values())
    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(".", behavior="removed")]
    )
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials)
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() <= len(specials):
        raise FairQuantError("the tokenizer's training texts are empty: no word to put in the vocabulary")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"], **SPECIAL_TOKENS,
    )


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 8_000, model_max_length: int = 512, min_frequency: int = 2,
    add_eos_token: bool = False,
) -> Any:
    """Train a byte-level BPE on ``texts`` → ``PreTrainedTokenizerFast`` for a causal LM.

    - Pre-tokenizer and decoder ``ByteLevel`` (GPT-2's split of words, numbers and punctuation;
      no prefix space added, no normalizer): ``decode(encode(text))`` is ``text`` for any string.
      The 256 byte tokens are always in the vocabulary (``initial_alphabet``), so nothing is unknown.
    - Specials ``<pad>`` (id 0), ``<s>`` (bos, 1), ``</s>`` (eos, 2). Every encoded text starts with
      ``<s>`` — the first real token then has a context and is scored like the others — and, with
      ``add_eos_token``, ends with ``</s>``. (No eos by default, as Llama: a prompt that ended with
      eos would tell ``pipeline("text-generation")`` the text is over.)
    - ``padding_side="right"``: a padded batch then gives every row the position ids it has alone,
      so per-example NLL does not depend on the batch (Llama derives positions from the cache, not
      the mask). For batched *generation* set ``tokenizer.padding_side = "left"``.
    - ``model_max_length`` caps truncation; ``vocab_size`` counts the specials and the 256 bytes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [BPE_SPECIAL_TOKENS["pad_token"], BPE_SPECIAL_TOKENS["bos_token"], BPE_SPECIAL_TOKENS["eos_token"]]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(specials):
        raise FairQuantError(
            f"vocab_size must be at least {len(alphabet) + len(specials)} (256 bytes + {len(specials)} specials), "
            f"got {vocab_size}"
        )
    if model_max_length < 2:
        raise FairQuantError(f"model_max_length must be at least 2 (<s> and one token), got {model_max_length}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials, initial_alphabet=alphabet,
        show_progress=False,
    )
    characters = 0

    def counted() -> Iterable[str]:
        nonlocal characters
        for text in texts:
            characters += len(text)
            yield text

    tok.train_from_iterator(counted(), trainer=trainer)
    if characters == 0:
        raise FairQuantError("the tokenizer's training texts are empty: nothing to learn byte pairs from")
    bos, eos = BPE_SPECIAL_TOKENS["bos_token"], BPE_SPECIAL_TOKENS["eos_token"]
    ids = {t: tok.token_to_id(t) for t in (bos, eos)}
    end = f" {eos}" if add_eos_token else ""
    template = processors.TemplateProcessing(
        single=f"{bos} $A{end}", pair=f"{bos} $A{end} {bos}:1 $B:1{end}:1" if add_eos_token else f"{bos} $A $B:1",
        special_tokens=[(bos, ids[bos]), (eos, ids[eos])],
    )
    tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), template])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length, padding_side="right",
        model_input_names=["input_ids", "attention_mask"], clean_up_tokenization_spaces=False,
        **BPE_SPECIAL_TOKENS,
    )
