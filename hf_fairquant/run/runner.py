"""Run a recipe as stages: data → fp → export → audit → explain → mitigate → publish.

Each stage is one function over a shared :class:`_Run`; :func:`run` checks the recipe once
(statically, then the data), runs the stages the recipe configures — or those ``stages=`` names —
and returns a typed :class:`~hf_fairquant.results.RunResult`, from which the report, the card and
``results.json`` are rendered. The CLI's commands are stage selections (``train`` is data, fp,
mitigate, publish). Trainer checkpoints and ONNX staging live in a scratch folder beside the output
(removed on success, failure, exit and SIGTERM); the output folder appears whole at the end.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .. import deployment
from .._atomic import output_lock, scratch_directory, sweep_stale
from .._config import field_names
from .._distributed import device_of_process, init_from_launcher, is_main_process, world
from .._format import to_plain
from ..errors import FairQuantError
from ..inputs import GroupedInputs
from ..results import DataInfo, Deployment, Mitigation, ModelInfo, Published, RunResult
from .checks import (
    audited_recipe,
    check_data,
    check_max_length,
    check_recipe,
    is_inside,
)
from .models import (
    build_model,
    class_names,
    load_recipe_data,
    modality,
    model_config,
    publish_backend,
    resolve_task,
    train_fair_qat,
    train_fp_model,
    with_backend,
)
from .recipe import STAGES, RunRecipe

#: The trainer arguments the results and the card report for the fair QAT.
_MITIGATION_FIELDS = (
    "quantization", "group_column", "group_sampling", "sampling_power", "group_weighting", "dro_step_size",
    "num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size", "lr_scheduler_type",
    "warmup_steps", "weight_decay", "range_update_steps", "calibration_size", "seed",
)


@dataclass
class _Run:
    """What the stages share: the recipe, what each stage produced, the clock."""

    recipe: RunRecipe
    stages: tuple[str, ...]
    audited: list[Any]
    scratch: Path
    echo: Callable[[str], Any]
    command: str
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    lap_start: float = field(default_factory=time.perf_counter)
    task: Any = None
    splits: Any = None
    train_inputs: GroupedInputs | None = None
    eval_inputs: GroupedInputs | None = None
    spec: Any = None
    tokenizer: Any = None
    processor: Any = None
    model: Any = None
    report: Any = None
    explanation: Any = None
    explained: str | None = None
    trainer: Any = None
    quantized: Any = None
    deployed: dict[str, Any] = field(default_factory=dict)
    deployment: Deployment | None = None
    staging: Path | None = None
    kept_float: dict[str, str] = field(default_factory=dict)

    @property
    def train(self) -> Any:
        return self.splits[self.recipe.data.train_split]

    @property
    def evaluation(self) -> Any:
        return self.splits[self.recipe.data.eval_split]

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.lap_start, 1)
        self.lap_start = now

    def say(self, stage: str, text: str) -> None:
        shown = [s for s in self.stages if s != "fp"]
        index = shown.index(stage) + 1 if stage in shown else 1
        self.echo(f"[{index}/{len(shown)}] {text}")


def selected_stages(recipe: RunRecipe, stages: Iterable[str] | None) -> tuple[str, ...]:
    """The stages to run, in order: ``stages`` (checked against the recipe) or every stage the recipe
    configures. Data and the FP model always run; explain needs the audit's recipes."""
    configured = {"data", "fp", "audit", "publish"}
    if recipe.export is not None:
        configured.add("export")
    if recipe.explain.enabled and recipe.audit.recipes:
        configured.add("explain")
    if recipe.mitigation is not None:
        configured.add("mitigate")
    if stages is None:
        return tuple(s for s in STAGES if s in configured)
    asked = [stages] if isinstance(stages, str) else list(stages)
    unknown = [s for s in asked if s not in STAGES]
    if unknown:
        raise FairQuantError(f"unknown stage(s) {unknown}; the stages are {list(STAGES)}")
    sections = {"export": "export", "mitigate": "mitigation", "explain": "explain (enabled, with audit.recipes)"}
    missing = [s for s in asked if s in sections and s not in configured]
    if missing:
        raise FairQuantError(
            f"stage(s) {missing} were asked for but the recipe does not configure them: add the section(s) "
            + ", ".join(sections[s] for s in missing)
        )
    chosen = {"data", "fp", *asked}
    if "explain" in chosen:
        chosen.add("audit")  # the explained recipe is one the audit measured
    return tuple(s for s in STAGES if s in chosen)


def run(
    recipe: RunRecipe,
    *,
    stages: Iterable[str] | None = None,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    token: str | None = None,
    command: str | None = None,
    echo: Callable[[str], Any] = print,
) -> RunResult:
    """Execute ``recipe`` (or the ``stages`` of it named, see :data:`~hf_fairquant.run.STAGES`) and
    return its :class:`~hf_fairquant.results.RunResult`; with the ``publish`` stage the output folder
    (quantized model, ``README.md`` card, ``report.md``, ``results.json``, ``plots/``) is written
    and, with ``push_to_hub``, pushed. Everything that can be checked before loading is checked
    first; an earlier interrupted run's temporaries of the same output folder are removed."""
    init_from_launcher()  # under accelerate launch / torchrun: join the process group (stages shard their passes)
    chosen = selected_stages(recipe, stages)
    audited = check_recipe(recipe, overwrite)  # before any folder is touched
    if "audit" in chosen:  # a Hub checkpoint's format too (its config.json only), before any data loads
        from ..audit import check_loadable

        for path in recipe.audit.quantized_models:
            check_loadable(path, f"quantized model {path}")
    if push_to_hub is not None:
        from ..hub import check_push_arguments

        token = check_push_arguments(push_to_hub, token)
        recipe.card.repo_id = push_to_hub
    out = Path(recipe.output_dir)
    main = is_main_process()  # under several processes only rank 0 touches the output folder
    if main:
        sweep_stale(out)
    else:
        echo = _silent
    saved = {s: getattr(recipe, s).output_dir for s in ("training", "mitigation") if getattr(recipe, s) is not None}
    command = command or _default_command()
    lock = output_lock(out, command) if main else contextlib.nullcontext()
    scratch_folder = scratch_directory(out, "checkpoints") if main else _private_scratch()
    try:
        with lock, scratch_folder as scratch, torch_threads(recipe.threads):  # one run per folder
            _checkpoints_outside(recipe, scratch)
            state = _Run(recipe, chosen, audited, scratch, echo, command)
            _data_and_fp(state)
            if "export" in chosen:
                _export(state)
            _audit(state)
            if "explain" in chosen:
                _explain(state)
            if "mitigate" in chosen:
                _mitigate(state)
            result = _result(state, out)
            if "publish" in chosen and main:
                _publish(state, result, push_to_hub, token)
            return result
    finally:
        for section, folder in saved.items():
            getattr(recipe, section).output_dir = folder


def _silent(text: str) -> None:
    """What processes other than rank 0 print: nothing."""


@contextlib.contextmanager
def _private_scratch() -> Iterator[Path]:
    """A scratch folder of this process alone (ranks other than 0 never write beside the output)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"hf-fairquant-rank{world()[0]}-") as folder:
        yield Path(folder)


# ---------------------------------------------------------------------------- the stages
def _data_and_fp(state: _Run) -> None:
    """Load and check the data, build the FP model (loaded, or from config and trained)."""
    from transformers import set_seed

    recipe = state.recipe
    state.say("data", "data and full-precision model")
    architecture = None
    if recipe.model.name_or_path is not None:  # a Hub model's config (small) before any data: its head, its reach
        config = model_config(recipe.model)
        architecture = (getattr(config, "architectures", None) or [None])[0]
    state.task = resolve_task(recipe.model, recipe.data, architecture)
    state.splits, state.spec, state.tokenizer, state.processor = load_recipe_data(recipe.model, recipe.data, state.task)
    check_data(recipe, state.splits, state.spec, state.audited, state.task)  # before the model is built or trained
    if recipe.training is not None:  # the initial weights too: a run is reproducible across processes
        set_seed(recipe.training.seed)
    model = build_model(recipe.model, class_names(state.train), modality(recipe.data), state.task, tokenizer=state.tokenizer)
    device = device_of_process()  # under a launcher: this rank's GPU (or the CPU)
    if device is not None:
        model = model.to(device)
    check_max_length(recipe.data, model)
    state.train_inputs, state.eval_inputs = (  # validated once, used by every stage
        GroupedInputs(model, state.splits[split], state.spec, task=state.task, split=split, processing_class=state.tokenizer)
        for split in (recipe.data.train_split, recipe.data.eval_split)
    )
    if "mitigate" in state.stages and recipe.mitigation.quantization_recipe is not None:
        quant = recipe.mitigation.quantization_recipe
        quant.plan(model)  # a pattern matching no module fails here
        choice = publish_backend(recipe.card.publish_backend, quant, model)
        with_backend(recipe.mitigation, choice)
        state.kept_float = dict(choice.kept_float)
    if "export" in state.stages:
        deployment.check_exportable(model, recipe.export.recipes)  # no ONNX Runtime kernel: fails here
    counts = state.spec.counts(state.splits)
    state.echo(f"groups by {state.spec.name}: " + "; ".join(f"{s}: {c}" for s, c in counts.items()))
    state.lap("data")
    if recipe.training is not None:
        model = train_fp_model(model, recipe.training, state.train, processing_class=state.tokenizer, task=state.task)
        state.lap("fp_training")
    state.model = model.eval()


def _export(state: _Run) -> None:
    """ONNX Runtime artifacts of the FP model (each audited as deployed, compared with its simulation)."""
    recipe = state.recipe
    state.say("export", f"export to ONNX Runtime: {', '.join(recipe.export.recipes)}")
    state.staging = state.scratch / "onnx-staging"  # removed with the scratch folder, whatever happens
    state.staging.mkdir()
    state.deployed, files = deployment.export_deployed(
        state.model, recipe.export, state.train, state.spec, state.staging,
        calibration_size=recipe.audit.calibration_size, seed=recipe.audit.seed, processing_class=state.tokenizer,
    )
    deployment.measure_speedups(state.model, state.deployed, files, state.evaluation, state.staging, recipe.export,
                                processing_class=state.tokenizer)
    state.deployment = Deployment(files=files)
    state.lap("export")


def _audit(state: _Run) -> None:
    """The FP model and every PTQ recipe (and the deployed files), per group."""
    from ..audit import audit

    recipes = state.audited if "audit" in state.stages else []
    state.say("audit", f"audit: {', '.join(str(r) for r in recipes) or 'FP only'}")
    state.report = audit(
        state.model, state.eval_inputs, recipes, state.spec, calibration_dataset=state.train_inputs,
        config=state.recipe.audit, deployed_models=state.deployed, progress=is_main_process(),
    )
    state.lap("audit")


def _explain(state: _Run) -> None:
    """The chain for one audited recipe: the one asked for, else the one that hurts the worst group most."""
    from ..diagnostics import ExplainConfig, explain

    recipe = state.recipe
    state.explained = recipe.explain.recipe or worst_recipe(state.report, state.audited)
    if state.explained is None:
        return
    state.say("explain", f"explain {state.explained}")
    options = {f: getattr(recipe.explain, f) for f in field_names(ExplainConfig)}
    state.explanation = explain(  # the parsed recipe: a mapping-form recipe's name is no preset
        state.model, audited_recipe(state.audited, state.explained) or state.explained.lower(), state.eval_inputs,
        state.spec, calibration_dataset=state.train_inputs, config=ExplainConfig(**options), progress=is_main_process(),
    )
    state.lap("explain")


def _mitigate(state: _Run) -> None:
    """Fair QAT with FairQuantTrainer, then the mitigated model's audit against the same FP pass."""
    from ..audit import QuantizedModel, audit

    recipe = state.recipe
    state.say("mitigate", "mitigate with FairQuantTrainer")
    state.trainer, state.quantized = train_fair_qat(
        state.model, recipe.mitigation, state.train, state.task, processing_class=state.tokenizer
    )
    state.lap("mitigation")
    name = f"FAIR-QAT {str(state.trainer.quant_recipe).upper()}"
    import dataclasses

    mitigated = audit(  # the checkpoints of audit.quantized_models are rows of the first audit already
        state.model, state.eval_inputs, [], state.spec, calibration_dataset=state.train_inputs,
        config=dataclasses.replace(recipe.audit, quantized_models=[]),
        quantized_models={name: QuantizedModel(state.quantized, state.trainer.quant_recipe)},
        reference=state.report,  # the FP pass of the first audit, not a second one
        progress=is_main_process(),
    )
    state.report = state.report.extended(mitigated)
    state.lap("mitigated_audit")
    if state.deployment is not None:
        reason = deployment.not_exportable_reason(state.model, state.trainer.quant_recipe)
        if reason is not None:  # e.g. 2-bit weights: ONNX Runtime has no kernel for them
            state.deployment.not_exported[name] = reason  # the final screen says so


def _publish(state: _Run, result: RunResult, push_to_hub: str | None, token: str | None) -> None:
    """Write the output folder whole (model, card, report, results.json, plots), then push."""
    from ..quantization.onnx import ONNX_DIR
    from ..report import summary_screen, write_outputs

    state.say("publish", "write the output folder")
    write_outputs(result, onnx_dir=state.staging / ONNX_DIR if state.staging is not None else None)
    if push_to_hub is not None:
        from ..hub import push_folder

        state.echo(f"pushing {result.output_dir} to {push_to_hub}")
        result.pushed_to = push_folder(result.output_dir, push_to_hub, token=token)
    state.echo("\n" + summary_screen(result))


# ---------------------------------------------------------------------------- the result
def _result(state: _Run, out: Path) -> RunResult:
    """The typed result of the stages that ran (see :class:`~hf_fairquant.results.RunResult`)."""
    from .. import __version__
    from ..quantization import layer_bits, quantizer_of

    recipe, model, report = state.recipe, state.model, state.report
    state.timings["total"] = round(time.perf_counter() - state.started, 1)
    counts = state.spec.counts(state.splits)
    mitigation = published = None
    if state.trainer is not None:
        args = state.trainer.args
        arguments = {k: getattr(args, k) for k in _MITIGATION_FIELDS if not (k == "max_steps" and args.max_steps <= 0)}
        if args.loss_unit != "example":  # reported only when it is not the default (classifier results unchanged)
            arguments["loss_unit"] = args.loss_unit
        allocation = getattr(state.trainer, "allocation", None)
        row = report.quantized[-1]
        mitigation = Mitigation(
            name=row.name, recipe=state.trainer.quant_recipe.to_dict(), arguments=to_plain(arguments),
            train_loss=_final_train_loss(state.trainer), allocated_bits=allocation.bits if allocation is not None else None,
        )
        published = Published(
            name=row.name, backend=quantizer_of(state.quantized).name, effective_bits=row.effective_bits,
            size_bytes=row.size_bytes, fp_size_bytes=report.fp.size_bytes,
            layer_bits={n: (str(q) if q is not None else "float") for n, q in layer_bits(state.quantized).items()},
            kept_float=dict(state.kept_float),
        )
    card = asdict(recipe.card)
    card["model_name"] = card["model_name"] or out.name
    card["repo_id"] = card["repo_id"] or recipe.output_dir  # what load_quantized(...) is shown with
    result = RunResult(
        command=state.command,
        hf_fairquant_version=__version__,
        model=ModelInfo(
            name_or_path=recipe.model.name_or_path, model_type=model.config.model_type,
            num_parameters=sum(p.numel() for p in model.parameters()), task=state.task.name,
            pipeline_tag=state.task.pipeline_tag(modality(recipe.data)), auto_class=state.task.auto_class(modality(recipe.data)),
            trained_here=recipe.training is not None, fp_training=_training_summary(recipe.training),
        ),
        data=DataInfo(
            source=recipe.data.source, train_split=recipe.data.train_split, eval_split=recipe.data.eval_split,
            group_columns=list(state.spec.columns), group_names=list(state.spec.names),
            group_counts={split: dict(c) for split, c in counts.items()},
            long_tail_classes=list(recipe.data.long_tail_classes),
            long_tail_fraction=recipe.data.long_tail_fraction if recipe.data.long_tail_classes else None,
        ),
        card=to_plain(card),
        audit=report,
        explained_recipe=state.explained if state.explanation is not None else None,
        explanation=state.explanation,
        mitigation=mitigation,
        published=published,
        deployment=state.deployment,
        wall_time_s=dict(state.timings),
        environment=_environment(),
        output_dir=out,
        fp_model=model,
        quantized_model=state.quantized,
        processor=state.processor,
    )
    return result


def worst_recipe(report: Any, audited: list[Any] | None = None) -> str | None:
    """The audited PTQ recipe that costs the worst-off group most: the largest fall of the
    minimum group accuracy — for a language model the largest rise of the highest group mean NLL
    (the worst language's) — ties: the fewest bits. Not the gap change — a recipe that wrecks
    every group can shrink the gap while it hurts the worst group most. With ``audited``, only
    recipes explain can take (presets, not transformers quantization configs) are candidates."""
    rows = report.quantized
    if audited is not None:
        names = {r.row_name for r in audited if r.trainable}
        rows = [r for r in rows if r.name in names]
    if not rows:
        return None
    names = getattr(report, "metric_names", None)
    if names is not None and not names.higher_is_better:
        fp_loss = report.fp.metrics["worst_group_loss"]
        worst = max(rows, key=lambda r: (r.metrics["worst_group_loss"] - fp_loss, -r.effective_bits))
        return worst.name
    fp_worst = report.fp.metrics["worst_group_accuracy"]
    worst = max(rows, key=lambda r: (fp_worst - r.metrics["worst_group_accuracy"], -r.effective_bits))
    return worst.name


def _training_summary(args: Any) -> dict[str, Any] | None:
    if args is None:
        return None
    keys = ("num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size", "lr_scheduler_type", "seed")
    return to_plain({k: getattr(args, k) for k in keys})


def _final_train_loss(trainer: Any) -> float | None:
    losses = [h["train_loss"] for h in trainer.state.log_history if "train_loss" in h]
    return losses[-1] if losses else None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` for the block (None: left as they are)."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _environment() -> dict[str, Any]:
    """What a run's numbers depend on beyond the recipe: library versions and torch's threads."""
    import torch
    import transformers

    return {"torch": torch.__version__, transformers.__name__: transformers.__version__, "threads": torch.get_num_threads()}


def _checkpoints_outside(recipe: RunRecipe, scratch: Path) -> None:
    """Trainer checkpoints never go into the final output folder (it is replaced whole at the
    end, and an empty ``checkpoints/`` there would make a rerun refuse the folder): a default or
    inside-the-output ``output_dir`` becomes a subfolder of the run's scratch folder."""
    out = Path(recipe.output_dir)
    for section, name in (("training", "checkpoints"), ("mitigation", "mitigation_checkpoints")):
        args = getattr(recipe, section)
        if args is not None and is_inside(Path(args.output_dir), out):
            args.output_dir = str(scratch / name)


def _default_command() -> str:
    import shlex
    import sys

    return "hf-fairquant " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# ---------------------------------------------------------------------------- the plan
def dry_run(recipe: RunRecipe, *, stages: Iterable[str] | None = None, overwrite: bool = False) -> str:
    """Check a recipe without loading data or weights (no network) and describe what a run does."""
    chosen = selected_stages(recipe, stages)
    audited = check_recipe(recipe, overwrite)
    steps = []
    model = recipe.model.name_or_path or f"a new {recipe.model.config.get('model_type')} from config"
    source = recipe.data.source + (f" ({recipe.data.subset})" if recipe.data.subset else "")
    task = resolve_task(recipe.model, recipe.data)
    steps.append(f"data: {source}, groups by {', '.join(recipe.data.group_columns)}"
                 + (f", derived long tail {recipe.data.long_tail_classes}" if recipe.data.long_tail_classes else ""))
    steps.append(f"model: {model} ({task.name}, {task.auto_class(modality(recipe.data))})"
                 + (("" if not recipe.training else f", trained for {recipe.training.max_steps} steps"
                     if recipe.training.max_steps > 0 else f", fine-tuned for {recipe.training.num_train_epochs:g} epoch(s)")))
    if "export" in chosen:
        steps.append(f"export: ONNX Runtime {', '.join(recipe.export.recipes)} of the FP model → onnx/, audited as deployed")
    shown = audited if "audit" in chosen else []
    steps.append(f"audit: FP + {', '.join(str(r) for r in shown) or 'nothing'}")
    if "explain" in chosen:
        worst = "the recipe that lowers the worst group most" if task.uses_class_labels else \
            "the recipe that raises the worst language's NLL most"
        steps.append(f"explain: {recipe.explain.recipe or worst}")
    if "mitigate" in chosen:
        mitigation = recipe.mitigation
        quant = mitigation.quantization_recipe
        kept = ""
        if quant is not None:
            from .checks import structure_model

            built = structure_model(recipe, task)
            if built is not None:
                choice = publish_backend(recipe.card.publish_backend, quant, built)
                quant = choice.recipe(quant)
                if choice.kept_float:
                    kept = f" (kept float so that plain transformers loads the folder: {', '.join(choice.kept_float)})"
        what = (f"{quant}{kept}" if quant is not None
                else f"bits allocated under a {mitigation.quantization_budget:g}-bit budget")
        steps.append(f"mitigate: FairQuantTrainer, {what}, sampling {mitigation.group_sampling} "
                     f"(power {mitigation.sampling_power:g}), weighting {mitigation.group_weighting}")
    if "publish" in chosen:
        steps.append(f"write: {recipe.output_dir}/")
    return "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))

