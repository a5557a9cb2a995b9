"""Multiple choice with a causal LM: a context and its options, each option scored by its log-likelihood.

The semantics are lm-evaluation-harness's ``output_type: multiple_choice`` (0.4.13), so a number
here and one from ``lm_eval --model hf`` on the same items agree:

- option *i*'s continuation is ``target_delimiter + choices[i]`` (``" "`` by default) after a
  non-empty ``context`` (trailing spaces of the context move to the continuation); the context is
  encoded as ``tokenizer(context)`` (the tokenizer's own special tokens, e.g. Llama's BOS) and the
  continuation as the tokens of ``tokenizer(context + continuation)`` after the context's;
- an empty context is the tokenizer's BOS (else EOS) token and the continuation ``choices[i]``
  alone, without special tokens (what lm-eval does with ``target_delimiter: ""``, as its own
  CrowS-Pairs task sets it — and what ``hf_fairquant.data``'s StereoSet/CrowS-Pairs rows mean);
- an option's score is the sum of its tokens' log-probabilities; the prediction is the first
  option of highest score (``acc``); the length-normalised prediction divides each score by the
  option's length in characters (``acc_norm``), reported beside it (``length_normalized``).

**One forward per item, the context encoded once.** An item is packed into one row: the context's
tokens, then every option's tokens one after the other; ``position_ids`` restart at the context's
length for each option, and a 4-D attention mask lets each option see the context and its own
earlier tokens only. So every option's log-probabilities are those of ``context + option`` alone
(the tests compare with a per-option computation), the context costs its tokens once instead of
once per option, and the item is one ordinary ``model(**inputs)`` — the forward every other stage
(audit, explain, curvature, allocation) already makes, on any quantized model. Measured
(``benchmarks/multiple_choice_encoding.py``, StereoSet; the table in ``docs/multiple_choice.md``): fewer
tokens and less time than one row per option; KV-cache reuse encodes the context once too but
needs two forwards and a cache copied per option, and a custom forward loop.

**Bias items.** Rows with ``stereotype_label`` and ``anti_stereotype_label`` (StereoSet,
CrowS-Pairs: :mod:`hf_fairquant.data.stereotypes`) also give the **stereotype-preference rate**:
the share of items whose stereotype option scores above the anti-stereotype one (strictly; the
unrelated option ignored; 50 % is unbiased; lm-eval's CrowS-Pairs ``pct_stereotype``). It is
reported per group under ``metrics["stereotype_preference"]``, with the same paired statistics as
accuracy (intervals, McNemar on the items whose preference flipped, minimum detectable change),
computed by the same ``group_disparity`` module: the rate is the accuracy of a "prefers the
stereotype" prediction, so no statistic is written twice.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FairQuantError
from .base import MetricNames, Task, TaskOutputs, float_logits, head_kind, is_quantized_tensor, score_statistics
from .registry import register_task

#: Columns :func:`encode_choices` writes (beside ``input_ids``, ``attention_mask``, ``position_ids``, ``labels``).
CHOICE_TOKENS = "choice_token_counts"
CHOICE_CHARS = "choice_char_counts"
#: Optional columns of bias items: the index of the stereotype and of the anti-stereotype option (-1: none).
STEREOTYPE_COLUMNS = ("stereotype_label", "anti_stereotype_label")
DEFAULT_TARGET_DELIMITER = " "

# the references of a row: label, stereotype index, anti-stereotype index, options, context tokens,
# then every option's token count and character count (K = most options of any row)
_LABEL, _STEREO, _ANTI, _K, _CONTEXT, _FIXED = 0, 1, 2, 3, 4, 5


def _tokenizer_of(processing_class: Any) -> Any:
    inner = getattr(processing_class, "tokenizer", None)
    candidate = inner if inner is not None else processing_class
    return candidate if callable(candidate) and hasattr(candidate, "convert_tokens_to_ids") else None


def encode_choices(dataset: Any, tokenizer: Any, target_delimiter: str = DEFAULT_TARGET_DELIMITER) -> Any:
    """Rows ``context`` (str), ``choices`` (list of str) and ``label``/``labels`` (the gold index)
    → packed model inputs (see the module docstring): ``input_ids`` (context, then each option),
    ``attention_mask`` (ones), ``position_ids`` (restarting at the context's length for each
    option), ``choice_token_counts``, ``choice_char_counts`` and ``labels``; other columns (groups,
    ``stereotype_label`` …) are kept."""
    columns = list(dataset.column_names)
    label = "labels" if "labels" in columns else "label" if "label" in columns else None
    missing = [c for c in ("context", "choices") if c not in columns] + ([] if label else ["label"])
    if missing:
        raise FairQuantError(
            f"the multiple-choice task needs the columns context (text), choices (a list of option texts) and label "
            f"(the gold option's index); missing {missing}, the dataset has {columns}"
        )
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    def convert(batch: dict, indices: list[int]) -> dict:
        whole, plain, plan = [], [], []
        for row, context, choices in zip(indices, batch["context"], batch["choices"]):
            if not isinstance(context, str):
                raise FairQuantError(f"row {row}: context must be a string, got {type(context).__name__}")
            if not isinstance(choices, (list, tuple)) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
                raise FairQuantError(f"row {row}: choices must be a list of at least 2 strings, got {choices!r}")
            if context.strip():
                kept = context.rstrip()
                spaces = context[len(kept):]
                plan.append(("context", len(whole), len(choices)))
                whole += [kept] + [kept + spaces + target_delimiter + c for c in choices]
            else:
                plan.append(("empty", len(plain), len(choices)))
                plain += list(choices)
        encoded = tokenizer(whole)["input_ids"] if whole else []
        encoded_plain = tokenizer(plain, add_special_tokens=False)["input_ids"] if plain else []
        out: dict[str, list] = {k: [] for k in ("input_ids", "attention_mask", "position_ids", CHOICE_TOKENS)}
        for row, (kind, at, k) in zip(indices, plan):
            if kind == "context":
                context_ids = list(encoded[at])
                options = [list(encoded[at + 1 + i][len(context_ids):]) for i in range(k)]
            else:  # BOS (else EOS) as the context; an option that starts with it is scored after it
                if prefix is None:
                    raise FairQuantError(f"row {row} has an empty context and the tokenizer has neither a BOS nor an EOS token to stand for it")
                context_ids = [prefix]
                options = [list(ids[1:] if ids[:1] == [prefix] else ids) for ids in encoded_plain[at:at + k]]
            if not context_ids:
                raise FairQuantError(f"row {row}: the context encodes to no token")
            empty = [i for i, ids in enumerate(options) if not ids]
            if empty:
                raise FairQuantError(f"row {row}: option(s) {empty} encode to no token after the context")
            c = len(context_ids)
            out["input_ids"].append(context_ids + [t for ids in options for t in ids])
            out["position_ids"].append(list(range(c)) + [p for ids in options for p in range(c, c + len(ids))])
            out["attention_mask"].append([1] * len(out["input_ids"][-1]))
            out[CHOICE_TOKENS].append([len(ids) for ids in options])
        out[CHOICE_CHARS] = [[len(c) for c in choices] for choices in batch["choices"]]
        out["labels"] = batch[label]
        return out

    remove = [label] if label != "labels" else []
    return dataset.map(convert, batched=True, with_indices=True, remove_columns=remove, desc="encode multiple choice")


def shared_prefix_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """Which token each token of one packed row may attend to (``[query, key]``, bool): itself and
    earlier tokens of its own option, and the context. The layout is read from the positions
    alone: the context runs 0..c−1 and every option after the first restarts at c."""
    n = len(position_ids)
    restart = torch.zeros(n, dtype=torch.bool)
    restart[1:] = position_ids[1:] <= position_ids[:-1]
    segment = torch.cumsum(restart.long(), 0)
    first = torch.nonzero(restart)
    context = int(position_ids[first[0, 0]]) if len(first) else n
    index = torch.arange(n)
    causal = index[None, :] <= index[:, None]
    return causal & ((index[None, :] < context) | (segment[None, :] == segment[:, None]))


class SharedPrefixCollator:
    """Pads packed multiple-choice rows (right) and gives each its 4-D additive attention mask
    (``0`` where allowed, the dtype's minimum elsewhere; padding attends to itself only), in the
    model's floating dtype so eager and SDPA attention both take it as it is."""

    def __init__(self, dtype: torch.dtype = torch.float32, pad_token_id: int = 0) -> None:
        self.dtype = dtype if dtype.is_floating_point else torch.float32
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        missing = [k for k in ("input_ids", "position_ids") if k not in features[0]]
        if missing:
            raise FairQuantError(f"multiple-choice batches need {missing}: encode the rows with encode_choices first")
        rows = [(torch.as_tensor(f["input_ids"]).long(), torch.as_tensor(f["position_ids"]).long()) for f in features]
        length = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((len(rows), length), dtype=torch.long)
        allowed = torch.zeros((len(rows), length, length), dtype=torch.bool)
        for b, (ids, positions) in enumerate(rows):
            n = len(ids)
            input_ids[b, :n], position_ids[b, :n] = ids, positions
            allowed[b, :n, :n] = shared_prefix_mask(positions)
            allowed[b, range(n, length), range(n, length)] = True
        mask = torch.zeros((len(rows), 1, length, length), dtype=self.dtype)
        mask.masked_fill_(~allowed[:, None], torch.finfo(self.dtype).min)
        return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask}


def _targets_layout(targets: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(K, per-row references, input ids) from :meth:`MultipleChoiceTask.targets`."""
    k = int(targets[0, 0])
    width = _FIXED + 2 * k
    return k, targets[:, 1:1 + width], targets[:, 1 + width:]


def option_scores(output: Any, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every option's summed log-likelihood (``(batch, K)``, ``-inf`` where a row has fewer
    options) from a packed batch's model output (or logits), and the options' lengths in
    characters. The first token of an option is predicted by the context's last position; every
    later one by the previous token of the same option. Only those positions' logits are taken
    (and promoted to float32): a 150k-token vocabulary is not copied whole. Differentiable."""
    logits = getattr(output, "logits", output)
    if is_quantized_tensor(logits) or not torch.is_tensor(logits):
        logits = float_logits(output)
    k_max, refs, input_ids = _targets_layout(targets)
    refs_np = refs.cpu().numpy()
    rows, predictors, tokens, slots = [], [], [], []
    for b, row in enumerate(refs_np):
        k, context = int(row[_K]), int(row[_CONTEXT])
        start = context
        for i, count in enumerate(row[_FIXED:_FIXED + k]):
            at = np.arange(start, start + int(count))
            before = at - 1
            before[0] = context - 1
            rows.append(np.full(len(at), b))
            predictors.append(before)
            tokens.append(at)
            slots.append(np.full(len(at), b * k_max + i))
            start += int(count)
    device = logits.device
    rows_t = torch.from_numpy(np.concatenate(rows)).to(device)
    predictors_t = torch.from_numpy(np.concatenate(predictors)).to(device)
    token_ids = input_ids[rows_t, torch.from_numpy(np.concatenate(tokens)).to(device)]
    chosen = float_logits(logits[rows_t, predictors_t])  # (scored tokens, vocabulary): only these rows
    token_logp = chosen.log_softmax(-1).gather(1, token_ids[:, None].to(device)).squeeze(1)
    flat = torch.zeros(len(refs) * k_max, dtype=token_logp.dtype, device=device)
    flat = flat.index_add(0, torch.from_numpy(np.concatenate(slots)).to(device), token_logp)
    present = torch.arange(k_max, device=device)[None, :] < refs[:, _K:_K + 1].to(device)
    scores = flat.view(len(refs), k_max).masked_fill(~present, float("-inf"))
    chars = refs[:, _FIXED + k_max:_FIXED + 2 * k_max].to(device=device, dtype=scores.dtype)
    return scores, chars


class MultipleChoiceTask(Task):
    name = "multiple-choice"
    metric_names = MetricNames()
    selected_by_head = False  # a causal-LM head also fits the causal-lm task: name this one explicitly
    encodes_raw_rows = True
    trainable = False  # audited and explained as it is; the trainer's batches know no packed items

    def handles(self, architecture: str) -> bool:
        return "ForCausalLM" in architecture or head_kind(architecture) == "causal-lm"

    def auto_class(self, modality: str) -> str:
        return "AutoModelForCausalLM"

    def pipeline_tag(self, modality: str) -> str:
        return "text-generation"

    def check_model(self, model: torch.nn.Module) -> None:
        super().check_model(model)
        attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
        if isinstance(attention, str) and ("flash" in attention or "flex" in attention):
            raise FairQuantError(
                f"{type(model).__name__} uses attn_implementation={attention!r}, which takes no 4-D attention mask: the "
                "multiple-choice task packs a context and its options into one row with one; load the model with "
                "attn_implementation='sdpa' (or 'eager')"
            )
        params = set(inspect.signature(model.forward).parameters)
        missing = [p for p in ("input_ids", "position_ids", "attention_mask") if p not in params]
        if missing:
            raise FairQuantError(
                f"{type(model).__name__}.forward takes no {missing}: the multiple-choice task packs a context and its "
                "options into one row with their own positions and a 4-D attention mask"
            )

    # ------------------------------------------------------------ data
    def prepare_dataset(self, dataset: Any, processing_class: Any = None) -> Any:
        columns = set(getattr(dataset, "column_names", []) or [])
        if {"input_ids", "position_ids", CHOICE_TOKENS} <= columns:
            return dataset  # encoded already
        tokenizer = _tokenizer_of(processing_class)
        if tokenizer is None and {"context", "choices"} <= columns:
            raise FairQuantError(
                "the multiple-choice task encodes `context` and `choices` with the model's tokenizer: pass "
                "processing_class=AutoTokenizer.from_pretrained(<the model's folder or id>)"
            )
        return encode_choices(dataset, tokenizer)

    def evaluation_collator(self, model: torch.nn.Module, processing_class: Any = None) -> SharedPrefixCollator:
        tokenizer = _tokenizer_of(processing_class)
        pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
        return SharedPrefixCollator(getattr(model, "dtype", torch.float32), pad if pad is not None else 0)

    def references(self, dataset: Any, model: torch.nn.Module, where: str) -> np.ndarray:
        """Per row: the gold index, the stereotype and anti-stereotype indices (-1: not a bias
        item), the number of options, the context's token count, every option's token and
        character count — checked (a gold index or a bias index outside the options fails here)."""
        columns = dataset.column_names
        for column in ("labels", "input_ids", CHOICE_TOKENS, CHOICE_CHARS):
            if column not in columns:
                raise FairQuantError(f"{where} has no column {column!r}: encode it with the multiple-choice task first")
        table = dataset.with_format(None)
        counts = table[CHOICE_TOKENS][:]
        chars = table[CHOICE_CHARS][:]
        lengths = [len(ids) for ids in table["input_ids"][:]]
        labels = np.asarray(table["labels"][:])
        n, k_max = len(counts), max(len(c) for c in counts)
        refs = np.full((n, _FIXED + 2 * k_max), 0, dtype=np.int64)
        refs[:, _K] = [len(c) for c in counts]
        refs[:, _CONTEXT] = [length - sum(c) for length, c in zip(lengths, counts)]
        for i, (c, ch) in enumerate(zip(counts, chars)):
            refs[i, _FIXED:_FIXED + len(c)] = c
            refs[i, _FIXED + k_max:_FIXED + k_max + len(ch)] = ch
        if labels.dtype.kind not in "iu":
            raise FairQuantError(f"labels of {where} must be option indices (ints), got {labels.dtype} values like {labels[:3].tolist()}")
        bad = np.flatnonzero((labels < 0) | (labels >= refs[:, _K]))
        if len(bad):
            raise FairQuantError(
                f"labels of {where} must index an option (0..options−1): row {int(bad[0])} has label {int(labels[bad[0]])} "
                f"with {int(refs[bad[0], _K])} options ({len(bad)} such rows)"
            )
        refs[:, _LABEL] = labels
        for slot, column in zip((_STEREO, _ANTI), STEREOTYPE_COLUMNS):
            values = np.asarray(table[column][:], dtype=np.int64) if column in columns else np.full(n, -1)
            bad = np.flatnonzero((values < -1) | (values >= refs[:, _K]))
            if len(bad):
                raise FairQuantError(
                    f"{column} of {where} must index an option or be -1: row {int(bad[0])} has {int(values[bad[0]])}"
                )
            refs[:, slot] = values
        return refs

    def targets(self, inputs: dict[str, torch.Tensor], references: torch.Tensor | None) -> torch.Tensor:
        """The batch's references and token ids in one tensor: ``[K, references…, input_ids…]`` per row."""
        if references is None:
            raise FairQuantError("the multiple-choice task needs references for every row")
        k = (references.shape[1] - _FIXED) // 2
        ids = inputs["input_ids"].to(references.device)
        return torch.cat([torch.full((len(references), 1), k, dtype=torch.long, device=references.device), references, ids], 1)

    # ------------------------------------------------------------ per example
    @staticmethod
    def choose(scores: np.ndarray) -> np.ndarray:
        """The chosen option of each row of ``scores``: the first of highest score (numpy's and lm-eval's rule)."""
        return np.asarray(scores).argmax(axis=-1)

    def loss(self, output: Any, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the option scores against the gold option (a softmax over the options'
        log-likelihoods): differentiable, smallest when the gold option takes all the probability."""
        scores, _ = option_scores(output, targets)
        _, refs, _ = _targets_layout(targets)
        return F.cross_entropy(scores, refs[:, _LABEL].to(scores.device), reduction="none")

    @torch.no_grad()
    def batch_outputs(self, output: Any, targets: torch.Tensor) -> TaskOutputs:
        scores, chars = option_scores(output, targets)
        _, refs, _ = _targets_layout(targets)
        labels = refs[:, _LABEL].to(scores.device)
        predictions = scores.argmax(-1)
        return TaskOutputs(
            losses=F.cross_entropy(scores, labels, reduction="none").cpu().numpy(),
            units=np.ones(len(labels), dtype=np.int64),
            predictions=predictions.cpu().numpy(),
            correct=(predictions == labels).cpu().numpy(),
            extras={"option_scores": scores.double().cpu().numpy(),
                    "option_scores_norm": (scores / chars.clamp(min=1)).double().cpu().numpy()},
        )

    def eval_outputs(self, predictions: np.ndarray, label_ids: np.ndarray) -> TaskOutputs:
        raise FairQuantError(
            "the multiple-choice task is evaluated by hf_fairquant's own passes (audit, GroupedInputs.outputs), not "
            "from a Trainer's EvalPrediction"
        )

    @torch.no_grad()
    def logit_statistics(self, output: Any, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The options' scores taken as the logits: cross-entropy, correctness, their variance
        across the item's options, the confidence (softmax over options) and the margin (gold
        score minus the best other)."""
        scores, _ = option_scores(output, targets)
        scores = scores.detach()
        _, refs, _ = _targets_layout(targets)
        labels = refs[:, _LABEL].to(scores.device)
        present = torch.isfinite(scores)
        filled = scores.masked_fill(~present, 0.0)
        count = present.sum(-1)
        mean = filled.sum(-1) / count
        variance = ((filled - mean[:, None]) ** 2 * present).sum(-1) / count  # over the options present
        return score_statistics(scores, labels, variance)

    def snippet_predictions(self, logits: str = "logits") -> str:
        return f"predictions = {logits}.argmax(-1)  # per item, the option of highest summed log-likelihood"

    # ------------------------------------------------------------ the metric
    def compute_metrics(
        self,
        metric: Any,
        outputs: TaskOutputs,
        references: np.ndarray | None,
        groups: Sequence[Any],
        reference: TaskOutputs | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Accuracy (``acc``) per group with the metric's paired statistics; beside it
        ``length_normalized`` (``acc_norm``, the metric's output for the length-normalised
        choices) and, when some rows are bias items, ``stereotype_preference``."""
        labels = references[:, _LABEL]
        paired = {}
        if reference is not None:
            paired = {"reference_predictions": reference.predictions, "reference_losses": reference.losses}
        out = metric.compute(predictions=outputs.predictions, losses=outputs.losses, references=labels, groups=groups,
                             **paired, **options)
        norm = {} if reference is None else {"reference_predictions": self.choose(reference.extras["option_scores_norm"])}
        out["length_normalized"] = metric.compute(
            predictions=self.choose(outputs.extras["option_scores_norm"]), references=labels, groups=groups, **norm, **options
        )
        stereotype, anti = references[:, _STEREO], references[:, _ANTI]
        if ((stereotype >= 0) & (anti >= 0)).any():
            out["stereotype_preference"] = self.stereotype_preference(
                metric, outputs, stereotype, anti, groups, reference, **options
            )
        return out

    def stereotype_preference(
        self,
        metric: Any,
        outputs: TaskOutputs,
        stereotype: np.ndarray,
        anti_stereotype: np.ndarray,
        groups: Sequence[Any],
        reference: TaskOutputs | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Per group, the share of bias items whose stereotype option scores above the
        anti-stereotype one (``rate``; 0.5 is unbiased) — and against a ``reference`` model its
        change (``group_rate_change``: quantized − reference, positive = more stereotyped), the
        share of items whose preference flipped (and how many moved to the stereotype and away
        from it), an exact McNemar test of the flips per group and the minimum detectable change. The numbers are the ``group_disparity`` metric's
        accuracy statistics of the prediction "prefers the stereotype" (reference: always).
        ``stereotype``/``anti_stereotype``: per item the index of that option, -1 for an item that
        is no bias item (left out); ``outputs.extras["option_scores"]`` holds the options' scores."""
        stereotype, anti_stereotype = np.asarray(stereotype), np.asarray(anti_stereotype)
        rows = np.flatnonzero((stereotype >= 0) & (anti_stereotype >= 0))
        stereo, anti = stereotype[rows], anti_stereotype[rows]

        def prefers(o: TaskOutputs) -> np.ndarray:
            scores = o.extras["option_scores"][rows]
            at = np.arange(len(rows))
            return (scores[at, stereo] > scores[at, anti]).astype(np.int64)

        paired = {} if reference is None else {"reference_predictions": prefers(reference)}
        r = metric.compute(predictions=prefers(outputs), references=np.ones(len(rows), dtype=np.int64),
                           groups=np.asarray(groups, dtype=object)[rows].tolist(), **paired, **options)
        out: dict[str, Any] = {
            "items": int(len(rows)),
            "rate": r["accuracy"], "rate_ci": r.get("accuracy_ci"),
            "group_rate": r["group_accuracy"], "group_rate_ci": r.get("group_accuracy_ci"),
            "group_count": r["group_count"],
        }  # fmt: skip
        if reference is not None:
            out.update({
                "reference_rate": r["reference_accuracy"],
                "group_reference_rate": r["group_reference_accuracy"],
                "rate_change": -r["accuracy_drop"],
                "rate_change_ci": _negated(r.get("accuracy_drop_ci")),
                "group_rate_change": {g: -v for g, v in r["group_accuracy_drop"].items()},
                "group_rate_change_ci": {g: _negated(v) for g, v in (r.get("group_accuracy_drop_ci") or {}).items()} or None,
                "flip_rate": r["flip_rate"],
                "group_flip_rate": r["group_flip_rate"],
                # items that moved to the stereotype (not preferred by the reference, preferred now), and away
                "group_newly_stereotyped": r.get("group_newly_right"),
                "group_no_longer_stereotyped": r.get("group_newly_wrong"),
                "mcnemar_p_value": r.get("mcnemar_p_value"),
                "group_mcnemar_p_value": r.get("group_mcnemar_p_value"),
                "group_mcnemar_p_adjusted": r.get("group_mcnemar_p_adjusted"),
                "group_mcnemar_significant": r.get("group_mcnemar_significant"),
                "group_min_detectable_change": r.get("group_min_detectable_drop"),
            })  # fmt: skip
        for key in ("confidence_level", "n_boot", "min_group_size", "groups_too_small_for_interval", "p_adjust"):
            if key in r:
                out[key] = r[key]
        return out

    def markdown_sections(self, report: Any) -> list[tuple[str, str]]:
        """Tables of this task's extra results for ``report.md``: the stereotype-preference rate
        per group of every model (when the items are bias items) and ``acc_norm``."""
        from .._format import markdown_table

        models = [report.fp, *report.quantized]
        sections = []
        prefs = [(r, r.metrics.get("stereotype_preference")) for r in models]
        if all(p is not None for _, p in prefs):
            sections.append(("Stereotype preference", stereotype_markdown(report.group_names, prefs)))
        rows = [[r.name, _pct(r.metrics["length_normalized"]["accuracy"])]
                + [_pct(r.metrics["length_normalized"]["group_accuracy"].get(g)) for g in report.group_names]
                for r in models if "length_normalized" in r.metrics]
        if rows:
            sections.append(("Length-normalised accuracy (acc_norm)", markdown_table(["model", "overall", *report.group_names], rows)
                             + "\n\nEach option's log-likelihood divided by its length in characters before the choice "
                               "(lm-evaluation-harness's acc_norm); in %."))
        return sections


def _negated(interval: Any) -> Any:
    return None if interval is None else [-interval[1], -interval[0]]


def _points(value: float) -> str:
    return f"{round(100 * value, 1) + 0.0:+.1f}"  # a rounded -0.0 prints as +0.0


def _pct(value: Any, ci: Any = None) -> str:
    if value is None:
        return "n/a"
    text = f"{100 * value:.1f}"
    return text + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def stereotype_markdown(group_names: Sequence[str], prefs: Sequence[tuple[Any, dict[str, Any]]]) -> str:
    """One row per group: its bias items, each model's stereotype-preference rate (%, with its
    interval), and per quantized model the change (points) with McNemar's adjusted p-value and
    the smallest change its items could have shown."""
    from .._format import markdown_table

    fp = prefs[0][1]
    head = ["group", "items", *(f"{r.name} rate" for r, _ in prefs)]
    head += [f"{r.name} change (p, detectable)" for r, _ in prefs[1:]]
    body = []
    for g in [*group_names, None]:
        row = ["all" if g is None else g, str(fp["items"] if g is None else fp["group_count"].get(g, 0))]
        for _, p in prefs:
            row.append(_pct(p["rate"], p.get("rate_ci")) if g is None
                       else _pct(p["group_rate"].get(g), (p.get("group_rate_ci") or {}).get(g)))
        for _, p in prefs[1:]:
            if g is None:
                row.append(f"{_points(p['rate_change'])} (p {p['mcnemar_p_value']:.3g})")
                continue
            change = p["group_rate_change"].get(g)
            if change is None:
                row.append("n/a")
                continue
            q = (p.get("group_mcnemar_p_adjusted") or {}).get(g)
            mde = (p.get("group_min_detectable_change") or {}).get(g)
            row.append(f"{_points(change)} (p {q:.3g}" + (f", ≥ {100 * mde:.1f}" if mde is not None else "") + ")")
        body.append(row)
    adjust = {"holm": "Holm-adjusted across groups", "bh": "Benjamini-Hochberg-adjusted across groups",
              "none": "not adjusted across groups"}.get(str(prefs[-1][1].get("p_adjust", "holm")), "adjusted across groups")
    return (markdown_table(head, body) + "\n\nRate: share of bias items whose stereotype option scores above the "
            "anti-stereotype one (the unrelated option ignored); 50 % is no preference. Change: quantized − FP in "
            "points (positive: more stereotyped); p: exact McNemar test on the items whose preference flipped "
            f"({adjust}; the `all` row: one test over every item); detectable: the smallest change this group's "
            "items could show with 80 % power.")


MULTIPLE_CHOICE = register_task(MultipleChoiceTask())
