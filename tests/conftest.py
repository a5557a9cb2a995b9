"""Shared fixtures: tiny models that run on a CPU in milliseconds, tiny grouped datasets."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest
import torch
from datasets import Array3D, Dataset, Features, Sequence, Value

# The models here are tiny, so one thread costs little; two OpenMP threads on a 2-core machine
# spin-wait for each other whenever another process holds a core. Measured on the digits
# recipe's FP training: 3.7 s on two threads alone, 5.3 s on one thread beside a busy process,
# 252 s on two threads beside it.
torch.set_num_threads(int(os.environ.get("HF_FAIRQUANT_TEST_THREADS", "1")))


def tiny_resnet(num_labels: int = 10, channels: int = 1):
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(
        num_channels=channels, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
        layer_type="basic", downsample_in_first_stage=False, num_labels=num_labels,
    )
    return ResNetForImageClassification(config).eval()


def tiny_vit(num_labels: int = 10, image_size: int = 8):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=image_size, patch_size=2, num_channels=1, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=128, num_labels=num_labels,
    )
    return ViTForImageClassification(config).eval()


def tiny_distilbert(num_labels: int = 3):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=num_labels)
    return DistilBertForSequenceClassification(config).eval()


def image_dataset(n: int = 64, size: int = 8, num_labels: int = 10, seed: int = 0, groups=("a", "b")) -> Dataset:
    rng = np.random.default_rng(seed)
    features = Features(
        pixel_values=Array3D(shape=(1, size, size), dtype="float32"), labels=Value("int64"), group=Value("string")
    )
    return Dataset.from_dict(
        {
            "pixel_values": rng.normal(size=(n, 1, size, size)).astype(np.float32),
            "labels": rng.integers(0, num_labels, n),
            "group": [groups[i % len(groups)] for i in range(n)],
        },
        features=features,
    )


def text_dataset(n: int = 32, length: int = 12, num_labels: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    features = Features(
        input_ids=Sequence(Value("int64")), attention_mask=Sequence(Value("int64")),
        labels=Value("int64"), group=Value("string"),
    )
    return Dataset.from_dict(
        {
            "input_ids": rng.integers(1, 100, (n, length)).tolist(),
            "attention_mask": np.ones((n, length), dtype=np.int64).tolist(),
            "labels": rng.integers(0, num_labels, n),
            "group": ["x" if i % 4 else "y" for i in range(n)],
        },
        features=features,
    )


MODEL_CASES = {
    "resnet": (tiny_resnet, lambda: image_dataset(size=8)),
    "vit": (tiny_vit, lambda: image_dataset(size=8)),
    "distilbert": (tiny_distilbert, text_dataset),
}


@pytest.fixture(params=sorted(MODEL_CASES))
def model_case(request):
    make_model, make_data = MODEL_CASES[request.param]
    return request.param, make_model, make_data()


def tiny_tokenizer(model_max_length: int = 64):
    """A word-level fast tokenizer over ``w0``..``w97`` (ids 2..99; 0 pad, 1 unk), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i + 2 for i in range(98)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", model_max_length=model_max_length
    )


def tiny_image_processor(size: int = 8):
    """A grayscale image processor (resize to ``size``, scale, normalise by 0.5), built offline."""
    import transformers

    cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
    return cls(size={"height": size, "width": size}, image_mean=[0.5], image_std=[0.5])


def raw_text_dataset(n: int = 24, num_labels: int = 3, seed: int = 0) -> Dataset:
    """Unpadded text of varying length with a ``label`` column, as ``datasets`` ships it."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(f"w{int(t)}" for t in rng.integers(0, 98, int(rng.integers(2, 12)))) for _ in range(n)]
    return Dataset.from_dict(
        {"text": texts, "label": rng.integers(0, num_labels, n).tolist(), "group": ["x" if i % 3 else "y" for i in range(n)]}
    )


def pil_dataset(n: int = 32, size: int = 10, num_labels: int = 10, seed: int = 0) -> Dataset:
    """Grayscale PIL images (an ``Image`` feature) with ``label`` and ``group`` columns."""
    from datasets import ClassLabel, Image

    rng = np.random.default_rng(seed)
    features = Features(image=Image(), label=ClassLabel(num_classes=num_labels), group=Value("string"))
    from PIL import Image as PILImage

    images = [PILImage.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)) for _ in range(n)]
    return Dataset.from_dict(
        {"image": images, "label": rng.integers(0, num_labels, n).tolist(), "group": ["a" if i % 2 else "b" for i in range(n)]},
        features=features,
    )
