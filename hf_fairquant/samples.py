"""lm-evaluation-harness interop: the paired, per-group comparison of ``lm_eval --log_samples`` runs.

``compare_samples(fp, [quantized, …], group_field="doc.category", metric="acc")`` reads the
per-item sample files lm-eval writes (``samples_<task>_<date>.jsonl``: one JSON line per item with
``doc_id``, ``doc``, ``doc_hash``, ``filtered_resps`` and the metric) for a full-precision model and
its quantized versions on the same task, joins them item by item on ``doc_id`` (checked by
``doc_hash``: the same item in every file; a missing or duplicated item is an error that lists
them), and gives the :class:`~hf_fairquant.AuditReport` an audit gives — an FP row and one row per
quantized file, each group's metric with the ``group_disparity`` metric's paired statistics
(McNemar per group, intervals, minimum detectable drop) — plus, with ``output_dir``, ``report.json``,
``report.md``, ``plots/group_accuracy.png`` and ``card_section.md`` (a section and model-index
entries to paste into a model card).

**What is compared.** The metric must be 0/1 per item (``acc``, ``acc_norm``, ``exact_match``,
CrowS-Pairs' ``pct_stereotype`` …). For a ``multiple_choice`` task, ``acc`` and ``acc_norm`` are
recomputed from the logged log-likelihoods by the multiple-choice task's rule (first option of
highest score; ``acc_norm`` divides by each option's length in characters) and used only when
they reproduce the logged value of every item: then a flip is a changed *answer*. Otherwise the
predictions are the items' correctness, and a flip is a changed *correctness* (an answer that moved
from one wrong option to another does not count) — ``settings["predictions"]`` says which. Items
whose ``doc`` carries ``stereotype_label`` and ``anti_stereotype_label`` (this package's StereoSet
and CrowS-Pairs rows) also give the stereotype-preference rate per group, as the multiple-choice
task reports it.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._atomic import atomic_directory, output_lock
from .audit import AuditReport, ModelResult
from .errors import FairQuantError, MissingFileError
from .metrics import load_group_disparity, metric_load_snippet
from .quantization import check_unique_names
from .report import PLOTS_DIR, plot_group_accuracy, task_sections
from .run import check_output_dir
from .summary import summary_table
from .tasks import TaskOutputs, get_task

#: How many missing / duplicated items an error lists by id.
_LISTED = 20
_DTYPE_BITS = {"float32": 32.0, "float": 32.0, "float16": 16.0, "half": 16.0, "bfloat16": 16.0, "float64": 64.0}


@dataclass
class SampleLog:
    """One ``--log_samples`` file, read: per item (by ``doc_id``) its group, metric value, hash,
    the logged option log-likelihoods and gold index (multiple choice), and its ``doc``."""

    path: Path
    metric: str
    doc_ids: list[int]
    groups: dict[int, str]
    values: dict[int, float]
    hashes: dict[int, str | None]
    scores: dict[int, list[float]] = field(default_factory=dict)
    lengths: dict[int, list[int]] = field(default_factory=dict)
    targets: dict[int, int] = field(default_factory=dict)
    docs: dict[int, Any] = field(default_factory=dict)

    @property
    def task(self) -> str | None:
        """The task name in lm-eval's file name ``samples_<task>_<date>.jsonl``, or None."""
        stem = self.path.stem
        return stem[len("samples_"):].rsplit("_", 1)[0] if stem.startswith("samples_") and "_" in stem[8:] else None


def _field(record: dict, path: str, where: str) -> Any:
    value: Any = record
    walked = []
    for part in path.split("."):
        walked.append(part)
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            have = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise FairQuantError(f"{where}: no field {'.'.join(walked)!r} (of --group-field {path!r}); there: {have}")
    return value


def _listed(ids: Sequence[Any]) -> str:
    ids = sorted(ids)
    return ", ".join(map(str, ids[:_LISTED])) + (f" … ({len(ids)} in all)" if len(ids) > _LISTED else "")


def read_samples(path: str | Path, metric: str = "acc", group_field: str = "doc.category",
                 filter_name: str | None = None) -> SampleLog:
    """Read one ``lm_eval --log_samples`` JSONL file (see the module docstring); an item logged
    twice, a missing field or a metric that is not 0/1 is an error naming the items."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"lm-eval samples file {path} not found (lm_eval --log_samples writes samples_<task>_<date>.jsonl)")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as err:
                raise FairQuantError(f"{path}:{n} is not a JSON line ({err}): give a samples_*.jsonl file of lm_eval --log_samples") from None
    if not records:
        raise FairQuantError(f"{path} holds no samples")
    filters = sorted({str(r.get("filter", "none")) for r in records})
    if filter_name is None and len(filters) > 1:
        raise FairQuantError(f"{path} logs the filters {filters}: choose one with --filter")
    if filter_name is not None:
        if filter_name not in filters:
            raise FairQuantError(f"{path} has no filter {filter_name!r}; it has {filters}")
        records = [r for r in records if str(r.get("filter", "none")) == filter_name]
    log = SampleLog(path, metric, [], {}, {}, {})
    duplicated, not_binary = set(), []
    for r in records:
        if "doc_id" not in r:
            raise FairQuantError(f"{path}: a line has no doc_id (keys {sorted(r)}): not lm-eval --log_samples output")
        doc_id = int(r["doc_id"])
        where = f"{path}, doc_id {doc_id}"
        if doc_id in log.values:
            duplicated.add(doc_id)
            continue
        if metric not in r:
            have = [k for k in r.get("metrics", []) if k in r] or sorted(k for k, v in r.items() if isinstance(v, (int, float)) and k != "doc_id")
            raise FairQuantError(f"{where}: no metric {metric!r}; logged: {have}")
        value = r[metric]
        if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
            value = float(value)
        else:
            not_binary.append((doc_id, value))
            continue
        group = _field(r, group_field, where)
        if isinstance(group, (dict, list)) or group is None:
            raise FairQuantError(f"{where}: --group-field {group_field!r} is {group!r}, not a group name")
        log.doc_ids.append(doc_id)
        log.values[doc_id] = value
        log.groups[doc_id] = str(group)
        log.hashes[doc_id] = r.get("doc_hash")
        log.docs[doc_id] = r.get("doc")
        _read_choices(log, doc_id, r)
    if duplicated:
        raise FairQuantError(f"{path} logs items more than once: doc_id {_listed(duplicated)}")
    if not_binary:
        raise FairQuantError(
            f"{path}: metric {metric!r} is not 0/1 per item (doc_id {not_binary[0][0]}: {not_binary[0][1]!r}); "
            "compare-samples compares per-item 0/1 metrics (acc, acc_norm, exact_match, pct_stereotype, …)"
        )
    return log


def _read_choices(log: SampleLog, doc_id: int, record: dict) -> None:
    """The logged log-likelihood of every option, their lengths and the gold index, when the
    item is a multiple-choice one (``filtered_resps`` of ``[loglikelihood, is_greedy]`` pairs)."""
    resps = record.get("filtered_resps")
    try:
        scores = [float(r[0]) for r in resps]
        target = int(str(record.get("target")))
        args = record.get("arguments") or {}
        continuations = [str(args[k]["arg_1"]) for k in sorted(args, key=lambda k: int(k.rsplit("_", 1)[-1]))]
    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        return
    if len(scores) < 2 or len(continuations) != len(scores) or not 0 <= target < len(scores):
        return
    log.scores[doc_id], log.targets[doc_id] = scores, target
    # lm-eval's acc_norm divides by len(choice), the continuation without its target delimiter (" " by default)
    log.lengths[doc_id] = [len(c) - 1 if c.startswith(" ") else len(c) for c in continuations]


def _join(fp: SampleLog, others: Sequence[SampleLog]) -> list[int]:
    """The items of every file, in FP order; missing items or other data (doc_hash) are an error."""
    keys = set(fp.doc_ids)
    problems = []
    for log in others:
        here = set(log.doc_ids)
        if here - keys:
            problems.append(f"{log.path} has items the FP file {fp.path} lacks: doc_id {_listed(here - keys)}")
        if keys - here:
            problems.append(f"{log.path} lacks items of the FP file {fp.path}: doc_id {_listed(keys - here)}")
        differ = [k for k in keys & here if fp.hashes[k] and log.hashes[k] and fp.hashes[k] != log.hashes[k]]
        if differ:
            problems.append(f"{log.path} and {fp.path} hold different documents (doc_hash) at doc_id {_listed(differ)}")
    if problems:
        raise FairQuantError("the sample files are not runs of the same items: " + "; ".join(problems))
    return list(fp.doc_ids)


def _choices(logs: Sequence[SampleLog], keys: list[int], metric: str) -> tuple[list[np.ndarray] | None, np.ndarray | None, str]:
    """Per file the chosen option of every item, recomputed from the logged log-likelihoods, and
    the gold indices — when that reproduces every logged value (else None: correctness is compared)."""
    if metric not in ("acc", "acc_norm") or not all(k in log.scores for log in logs for k in keys):
        return None, None, "correctness"
    if any(len({len(log.scores[k]) for log in logs}) != 1 for k in keys):
        return None, None, "correctness"
    task = get_task("multiple-choice")
    targets = np.array([logs[0].targets[k] for k in keys])
    chosen = []
    for log in logs:
        picks = []
        for k in keys:
            scores = np.asarray(log.scores[k], dtype=np.float64)
            if metric == "acc_norm":
                scores = scores / np.maximum(np.asarray(log.lengths[k], dtype=np.float64), 1)
            picks.append(int(task.choose(scores)))
        picks = np.array(picks)
        if not np.array_equal((picks == targets).astype(float), np.array([log.values[k] for k in keys])):
            return None, None, "correctness"
        chosen.append(picks)
    return chosen, targets, "option"


def _stereotype_inputs(logs: Sequence[SampleLog], keys: list[int]) -> tuple[list[TaskOutputs], np.ndarray, np.ndarray] | None:
    """Every file's option scores as :class:`TaskOutputs`, and per item the stereotype and
    anti-stereotype option, when the logged docs carry them (``stereotype_label``, ``anti_stereotype_label``)."""
    docs = [logs[0].docs.get(k) for k in keys]
    if not all(isinstance(d, dict) and "stereotype_label" in d and "anti_stereotype_label" in d for d in docs):
        return None
    if not all(k in log.scores for log in logs for k in keys):
        return None
    k_max = max(len(logs[0].scores[k]) for k in keys)
    outputs = []
    for log in logs:
        scores = np.full((len(keys), k_max), -np.inf)
        for i, k in enumerate(keys):
            scores[i, :len(log.scores[k])] = log.scores[k]
        n = len(keys)
        outputs.append(TaskOutputs(np.zeros(n), np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64),
                                   np.zeros(n, dtype=bool), {"option_scores": scores}))
    stereotype = np.array([int(d["stereotype_label"]) for d in docs])
    anti = np.array([int(d["anti_stereotype_label"]) for d in docs])
    return outputs, stereotype, anti


def _model_facts(samples: Path) -> tuple[str | None, float, int]:
    """(model, mean weight bits, bytes of its weight files) from the lm-eval results file beside
    ``samples`` (same run) and, for a local model folder, its ``hf_fairquant.json`` or config; NaN
    bits and 0 bytes when not known."""
    stamp = samples.stem.rsplit("_", 1)[-1]
    results = sorted(samples.parent.glob(f"results_{stamp}.json")) or sorted(samples.parent.glob("results_*.json"))
    if not results:
        return None, math.nan, 0
    try:
        data = json.loads(results[-1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, math.nan, 0
    args = (data.get("config") or {}).get("model_args") or {}
    if isinstance(args, str):
        args = dict(a.split("=", 1) for a in args.split(",") if "=" in a)
    model = args.get("pretrained") or data.get("model_name")
    folder = Path(str(model)).expanduser() if model else None
    if folder is None or not folder.is_dir():
        return model, math.nan, 0
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    bits = math.nan
    meta, config = folder / "hf_fairquant.json", folder / "config.json"
    try:
        if meta.is_file():
            bits = float(json.loads(meta.read_text(encoding="utf-8")).get("effective_bits", math.nan))
        elif config.is_file():
            cfg = json.loads(config.read_text(encoding="utf-8"))
            if not cfg.get("quantization_config"):
                dtype = str(args.get("dtype") or cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
                bits = _DTYPE_BITS.get(dtype.replace("torch.", ""), math.nan)
    except (OSError, ValueError, TypeError):
        pass
    return model, bits, size


def _default_name(model: str | None, samples: Path) -> str:
    """A quantized row's name: its model's folder name (from lm-eval's results file), else the
    samples file's name — or its folder's when lm-eval named the file (``samples_<task>_<date>``)."""
    if model:
        return Path(str(model)).name
    return samples.parent.name if samples.stem.startswith("samples_") else samples.stem


def compare_samples(
    fp: str | Path,
    quantized: str | Path | Sequence[str | Path],
    group_field: str = "doc.category",
    metric: str = "acc",
    *,
    names: Sequence[str] | None = None,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    filter_name: str | None = None,
    n_boot: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    p_adjust: str = "holm",
    min_group_size: int = 30,
    command: str | None = None,
) -> AuditReport:
    """The paired per-group report of lm-eval sample logs: ``fp`` (the full-precision model's
    ``samples_*.jsonl``) against each of ``quantized`` (the same task, its quantized versions),
    grouped by ``group_field`` (a dotted path into each logged line, e.g. ``doc.category``).
    ``names`` labels the quantized rows (default: each model's folder or file name). With
    ``output_dir`` the report, plots and card section are written there (whole, or not at all)."""
    quantized = [quantized] if isinstance(quantized, (str, Path)) else list(quantized)
    if not quantized:
        raise FairQuantError("compare-samples needs the FP samples file and at least one quantized model's")
    paths = [Path(fp), *map(Path, quantized)]
    if names is not None and len(names) != len(quantized):
        raise FairQuantError(f"{len(names)} names for {len(quantized)} quantized sample files: give one name per file")
    if output_dir is not None:
        check_output_dir(output_dir, overwrite)  # before any file is read
    logs = [read_samples(p, metric, group_field, filter_name) for p in paths]
    tasks = {log.task for log in logs if log.task}
    if len(tasks) > 1:
        raise FairQuantError(f"the sample files are of different tasks {sorted(tasks)}: compare runs of one task")
    keys = _join(logs[0], logs[1:])
    facts = [_model_facts(p) for p in paths]
    if names is None:
        names = [_default_name(m, p) for (m, _, _), p in zip(facts[1:], paths[1:])]
        if len({n.upper() for n in names}) < len(names) or "FP" in {n.upper() for n in names}:
            names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
    check_unique_names(names, "compare-samples rows (--names)")

    chosen, targets, kind = _choices(logs, keys, metric)
    if chosen is None:  # the items' correctness: a flip is a change of correctness
        predictions = [np.array([log.values[k] for k in keys], dtype=np.int64) for log in logs]
        references = np.ones(len(keys), dtype=np.int64)
    else:
        predictions, references = chosen, targets
    groups = [logs[0].groups[k] for k in keys]
    metric_module = load_group_disparity()
    options = dict(n_boot=n_boot, confidence_level=confidence_level, seed=seed, p_adjust=p_adjust,
                   min_group_size=min_group_size)
    results = []
    for i, log in enumerate(logs):
        paired = {} if i == 0 else {"reference_predictions": predictions[0]}
        metrics = metric_module.compute(predictions=predictions[i], references=references, groups=groups, **paired, **options)
        _, bits, size = facts[i]
        results.append(ModelResult("FP" if i == 0 else names[i - 1], bits, size, metrics))
    bias = _stereotype_inputs(logs, keys)
    if bias is not None:
        outputs, stereotype, anti = bias
        task = get_task("multiple-choice")
        for i, r in enumerate(results):
            r.metrics["stereotype_preference"] = task.stereotype_preference(
                metric_module, outputs[i], stereotype, anti, groups, None if i == 0 else outputs[0], **options)
    spec_names = sorted(set(groups))
    settings = {
        "source": "lm-evaluation-harness --log_samples", "lm_eval_task": next(iter(tasks), None), "metric": metric,
        "group_field": group_field, "filter": filter_name, "predictions": kind, "eval_examples": len(keys),
        "files": {r.name: str(p) for r, p in zip(results, paths)},
        "models": {r.name: f[0] for r, f in zip(results, facts)},
        "n_boot": n_boot, "confidence_level": confidence_level, "seed": seed, "p_adjust": p_adjust,
        "min_group_size": min_group_size, "eval_only_groups": [],
    }  # fmt: skip
    report = AuditReport([group_field], spec_names, results[0], results[1:], settings,
                         task="multiple-choice" if kind == "option" or bias is not None else "classification")
    if output_dir is not None:
        write_comparison(report, output_dir, command or _command_line())
    return report


def _command_line() -> str:
    return "hf-fairquant " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def render_comparison(report: AuditReport, command: str) -> str:
    """``report.md`` of a comparison: the per-group table, the task's sections, the plot."""
    s = report.settings
    how = ("the option each item chose, recomputed from the logged log-likelihoods (a flip is a changed answer)"
           if s["predictions"] == "option" else
           "each item's correctness (a flip is a changed correctness; the answers are not compared)")
    parts = [
        f"# hf-fairquant: {s.get('lm_eval_task') or 'lm-eval'} — {s['metric']} per {s['group_field']}, paired against FP",
        f"Reproduce: `{command}`. From lm-evaluation-harness sample logs: "
        + ", ".join(f"{name} `{path}`" for name, path in s["files"].items())
        + f"; {s['eval_examples']} items joined on doc_id (doc_hash checked). Compared: {how}.",
        "## Per group",
        report.to_markdown(),
        f"![{s['metric']} per group]({PLOTS_DIR}/group_accuracy.png)",
        *task_sections(report),
        "## What the tests and intervals mean",
        MEANING,
    ]
    return "\n\n".join(parts) + "\n"


#: What each statistic says, for readers who are not statisticians (the README's wording).
MEANING = (
    "- **Interval** [lo, hi]: where the group's true score plausibly lies, given how many items it has. It is "
    "wide for a small group, and a group under `min_group_size` items gets none, because there it would mislead.\n"
    "- **McNemar p-value**: it looks only at the items the two models disagree on, and says how likely that "
    "split would be if quantization changed nothing for the group. Below 0.05 (after the correction for "
    "testing every group) the change is more than chance.\n"
    "- **Minimum detectable drop**: the smallest drop the group's items would catch 8 times out of 10. "
    "\"No significant drop\" rules out only drops larger than that."
)


def card_section(report: AuditReport, command: str) -> str:
    """A model-card section (Markdown) and its model-index entries (YAML to merge into the card's
    metadata) for every quantized row: overall and per-group metric, and each group's drop."""
    from huggingface_hub import EvalResult, ModelCardData

    s = report.settings
    task_name = s.get("lm_eval_task") or "lm-eval task"
    blocks = []
    for r in report.quantized:
        entries = [(s["metric"], f"{s['metric']} ({r.name})", r.metrics["accuracy"]),
                   (s["metric"], f"{s['metric']} (FP)", report.fp.metrics["accuracy"])]
        for g in report.group_names:
            entries += [(s["metric"], f"{s['metric']}, {g} ({r.name})", r.metrics["group_accuracy"][g]),
                        (f"{s['metric']}_drop", f"{s['metric']} drop, {g} ({r.name} vs FP)", r.metrics["group_accuracy_drop"][g])]
        data = ModelCardData(model_name=r.name, eval_results=[
            EvalResult(task_type="text-generation", dataset_type=task_name, dataset_name=task_name, metric_type=t,
                       metric_name=n, metric_value=float(v)) for t, n, v in entries])
        blocks.append(f"model-index entries for {r.name}:\n\n```yaml\n{data.to_yaml()}\n```")
    return "\n\n".join([
        f"## Evaluation per group: {task_name} ({s['metric']} per {s['group_field']}, paired against full precision)",
        f"Measured with lm-evaluation-harness (`--log_samples`) and compared item by item with hf-fairquant "
        f"(`{command}`); {s['eval_examples']} items.",
        summary_table(report, markdown=True),
        "Per group, with its bootstrap interval:",
        report.group_markdown().rstrip("\n"),
        *task_sections(report, level="###"),
        MEANING,
        f"The statistics come from the `group_disparity` evaluate metric:\n\n```python\n{metric_load_snippet()}\n```",
        *blocks,
    ]) + "\n"


def write_comparison(report: AuditReport, output_dir: str | Path, command: str) -> Path:
    """``report.json``, ``report.md``, ``plots/group_accuracy.png`` and ``card_section.md`` in
    ``output_dir``, written under a temporary name and renamed into place."""
    out = Path(output_dir)
    with output_lock(out, command), atomic_directory(out) as tmp:
        (tmp / PLOTS_DIR).mkdir()
        plot_group_accuracy(report, tmp / PLOTS_DIR / "group_accuracy.png",
                            f"{report.settings['metric']} per group: FP and quantized (lm-eval samples)")
        report.save(tmp / "report.json")
        (tmp / "report.md").write_text(render_comparison(report, command), encoding="utf-8")
        (tmp / "card_section.md").write_text(card_section(report, command), encoding="utf-8")
    return out


__all__ = ["SampleLog", "card_section", "compare_samples", "read_samples", "render_comparison", "write_comparison"]
