"""A WordLevel tokenizer trained offline on a training split (``tokenizers``), for text models
built from a config: saved as a standard ``PreTrainedTokenizerFast``, so
``AutoTokenizer.from_pretrained(folder)`` loads it wherever the model goes.

Words are split on whitespace and '.' (removed), so a serialised field value such as
``State-gov`` or ``40`` stays one token; words seen fewer than ``min_frequency`` times map to
``[UNK]``. BERT-style specials: ``[CLS] … [SEP]``, ``[PAD]``, ``[MASK]``.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..errors import FairQuantError

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
#: ``ModelSection.tokenizer`` value that trains this tokenizer on the training split.
WORDLEVEL = "wordlevel"


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
