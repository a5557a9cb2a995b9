"""``hf-fairquant run|train|audit|explain|export|push|push-metric|compare-samples``: parse arguments, call the runner (each
command is a selection of its stages), explain or push; nothing more."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

from ._atomic import output_locked
from ._distributed import device_of_process, init_from_launcher, is_main_process, under_launcher


def _command_line() -> str:
    """The command as typed, for the card's "reproduce" line — without a ``--token`` value."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg.startswith("--token="):
            skip = False
            continue
        if arg == "--token":
            skip = True
            continue
        args.append(arg)
    return "hf-fairquant " + " ".join(shlex.quote(a) for a in args)


def _cmd_run(args: argparse.Namespace) -> int:
    from .run import dry_run, load_recipe, run

    recipe = load_recipe(args.recipe, output_dir=args.output_dir)
    if args.dry_run:
        print(dry_run(recipe, overwrite=args.overwrite))
        return 0
    run(recipe, overwrite=args.overwrite, push_to_hub=args.push_to_hub, token=args.token, command=_command_line())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """Only the mitigation: FP model (load or train) → FairQuantTrainer → quantized model + card."""
    from .errors import FairQuantError
    from .run import load_recipe, run

    recipe = load_recipe(args.recipe, output_dir=args.output_dir)
    if recipe.mitigation is None:
        raise FairQuantError(f"recipe {args.recipe} has no `mitigation` section: nothing for `train` to do")
    run(recipe, stages=("mitigate", "publish"), overwrite=args.overwrite, push_to_hub=args.push_to_hub,
        token=args.token, command=_command_line())
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .hub import push_folder

    url = push_folder(args.folder, args.repo_id, token=args.token, private=args.private, revision=args.revision)
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    print(f'load it: from hf_fairquant import load_quantized; model = load_quantized("{args.repo_id}")')
    return 0


def _cmd_push_metric(args: argparse.Namespace) -> int:
    from .hub import push_metric
    from .metrics import METRIC_REPO_ENV

    url = push_metric(args.repo_id, token=args.token, private=args.private, revision=args.revision)
    print(f"pushed the group_disparity metric to the Space {args.repo_id}: {url}")
    print(f'load it anywhere: import evaluate; group_disparity = evaluate.load("{args.repo_id}")')
    print(f"cards show this form when {METRIC_REPO_ENV}={args.repo_id} is set")
    return 0


def _cmd_compare_samples(args: argparse.Namespace) -> int:
    """FP and quantized lm-eval ``--log_samples`` files → the paired per-group report."""
    from ._config import split_commas
    from .samples import compare_samples
    from .summary import summary_table

    report = compare_samples(
        args.fp, args.quantized, group_field=args.group_field, metric=args.metric,
        names=split_commas(args.names) if args.names else None, output_dir=args.output_dir, overwrite=args.overwrite,
        filter_name=args.filter, n_boot=args.n_boot, confidence_level=args.confidence_level, seed=args.seed,
        p_adjust=args.p_adjust, min_group_size=args.min_group_size, command=_command_line(),
    )
    s = report.settings
    print(f"{s['metric']} per {s['group_field']} (%), {s['eval_examples']} items of {s.get('lm_eval_task') or 'the task'}")
    print(summary_table(report))
    if args.output_dir:
        print(f"wrote {args.output_dir}/: report.md, report.json, card_section.md, plots/")
    return 0


def _from_namespace(cls: type, args: argparse.Namespace) -> object:
    """The config dataclass ``cls`` from the options the subcommand generated for it."""
    from ._config import field_names

    return cls(**{name: getattr(args, name) for name in field_names(cls) if hasattr(args, name)})


def _stage_recipe(args: argparse.Namespace) -> object:
    """A recipe for a model as it is (no training) from a stage command's options."""
    from .audit import AuditConfig
    from .data import DataConfig
    from .run import ExplainSection, ModelSection, RunRecipe

    return RunRecipe(
        data=_from_namespace(DataConfig, args), model=ModelSection(name_or_path=args.model, task=args.task),
        audit=_from_namespace(AuditConfig, args), explain=ExplainSection(enabled=False), output_dir=args.output_dir,
    )


def _cmd_audit(args: argparse.Namespace) -> int:
    """Audit PTQ recipes (presets, transformers quantization configs) and/or pre-quantized
    checkpoints (``--quantized-model``, repeatable) against the model; with checkpoints and no
    ``--recipes``, only the checkpoints."""
    from .audit import DEFAULT_RECIPES
    from .run import run

    checkpoints = list(args.quantized_model_paths or [])
    if args.recipes is None:  # --quantized-model (or --quantized-models) alone audits only the checkpoints
        args.recipes = [] if checkpoints or getattr(args, "quantized_models", None) else list(DEFAULT_RECIPES)
    recipe = _stage_recipe(args)
    recipe.audit.quantized_models = [*recipe.audit.quantized_models, *checkpoints]
    run(recipe, stages=("audit", "publish"), overwrite=args.overwrite, command=_command_line())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """FP model → ONNX Runtime artifacts (``onnx/``), each audited per group as deployed and
    compared with its simulation (the exported recipes are the audited ones)."""
    from .quantization.onnx import ExportConfig
    from .run import run

    recipe = _stage_recipe(args)
    recipe.export = _from_namespace(ExportConfig, args)
    recipe.audit.recipes = list(recipe.export.recipes)
    run(recipe, stages=("export", "audit", "publish"), overwrite=args.overwrite, command=_command_line())
    return 0


@output_locked(lambda args: args.output_dir if is_main_process() else None)  # one run per output folder
def _cmd_explain(args: argparse.Namespace) -> int:
    from ._atomic import atomic_directory
    from .data import DataConfig
    from .diagnostics import ExplainConfig, explain
    from .quantization import QuantRecipe, load_quantized
    from .run import check_output_dir, load_pretrained

    started = time.perf_counter()
    check_output_dir(args.output_dir, args.overwrite)  # before any data or model is loaded
    config = _from_namespace(ExplainConfig, args)  # bad options fail before anything is loaded
    data = _from_namespace(DataConfig, args)
    if args.quantized_model is None:
        QuantRecipe.parse(args.recipe)  # an unknown preset fails before the data is loaded
    model, splits, spec, tokenizer = load_pretrained(args.model, data, task=args.task)
    quantized = load_quantized(args.quantized_model) if args.quantized_model else args.recipe
    device = device_of_process()  # under a launcher: this rank's GPU (or the CPU)
    if device is not None:
        model = model.to(device)
    result = explain(
        model, quantized, splits[data.eval_split], spec, calibration_dataset=splits[data.train_split], config=config,
        processing_class=tokenizer, task=args.task, progress=is_main_process(),
    )
    result.settings["total_wall_time_s"] = round(time.perf_counter() - started, 1)
    if not is_main_process():  # under a launcher only rank 0 writes and prints
        return 0
    out = Path(args.output_dir)
    with atomic_directory(out) as tmp:  # the folder appears whole, or not at all
        result.save(tmp)
    print(result.to_markdown())
    print(f"wrote {out / 'explain.json'}, {out / 'explain.md'} and {out / 'explain_plots'} "
          f"in {result.settings['total_wall_time_s']} s (explain itself: {result.settings['wall_time_s']} s)")
    return 0


def _options(*configs: type) -> list[argparse.ArgumentParser]:
    """One parent parser per config dataclass, generated by ``HfArgumentParser`` from its fields
    (``--calibration-size`` and ``--calibration_size`` both work): an option is declared once, in
    its dataclass. A name two configs share (``seed``) becomes one option that sets both."""
    from transformers import HfArgumentParser

    return [HfArgumentParser(cls, add_help=False) for cls in configs]


def _add_stage_parser(sub, name: str, help_text: str, configs: tuple, build: bool) -> argparse.ArgumentParser:
    parents = _options(*configs) if build else []
    parser = sub.add_parser(name, help=help_text, parents=parents, conflict_handler="resolve")
    parser.add_argument("--model", required=build, help="Hub model id or local folder (from_pretrained)")
    parser.add_argument("--task", default=None, help="the model's task (classification, causal-lm); default: its head's")
    parser.add_argument("--output-dir", required=build)
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    return parser


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser. Given ``argv``, the options generated from config dataclasses are only built
    for the subcommand it names, so ``hf-fairquant --help`` loads no ML library; without, for all."""
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    build_all = argv is None
    parser = argparse.ArgumentParser(prog="hf-fairquant", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="run a YAML recipe end to end: FP model → audit → explain → mitigate → card")
    p_train = sub.add_parser("train", help="only the recipe's mitigation: FairQuantTrainer → quantized model + card")
    for p, func in ((p_run, _cmd_run), (p_train, _cmd_train)):
        p.add_argument("recipe", type=Path)
        p.add_argument("--output-dir", default=None, help="default: the recipe's output_dir, else outputs/<recipe name>")
        p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
        p.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="push the output folder to this Hub repo")
        p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`)")
        p.set_defaults(func=func)
    p_run.add_argument("--dry-run", action="store_true", help="check the recipe and print the plan; load nothing")

    p_push = sub.add_parser("push", help="push an output folder (quantized model, card, report) to the Hub")
    p_push.add_argument("folder", type=Path)
    p_push.add_argument("--repo-id", required=True, help="namespace/name")
    p_push.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`)")
    p_push.add_argument("--private", action="store_true")
    p_push.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    p_push.set_defaults(func=_cmd_push)

    p_metric = sub.add_parser("push-metric", help="push the group_disparity evaluate metric to a Hub Space "
                              "(then evaluate.load('namespace/name') works anywhere)")
    p_metric.add_argument("repo_id", help="namespace/name of the Space, e.g. me/group_disparity")
    p_metric.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`)")
    p_metric.add_argument("--private", action="store_true")
    p_metric.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    p_metric.set_defaults(func=_cmd_push_metric)

    p_cmp = sub.add_parser("compare-samples", help="paired per-group report of lm-eval --log_samples files: an FP "
                           "model's and its quantized versions' (same task)")
    p_cmp.add_argument("fp", type=Path, help="the full-precision model's samples_<task>_<date>.jsonl")
    p_cmp.add_argument("quantized", type=Path, nargs="+", help="the quantized models' samples files (same task)")
    p_cmp.add_argument("--group-field", default="doc.category",
                       help="dotted path of the group in each logged line (default: doc.category)")
    p_cmp.add_argument("--metric", default="acc", help="a 0/1 per-item metric lm-eval logged (acc, acc_norm, exact_match, …)")
    p_cmp.add_argument("--names", default=None, help="comma-separated names of the quantized rows (default: model folders)")
    p_cmp.add_argument("--filter", default=None, help="lm-eval filter to compare when the files log several")
    p_cmp.add_argument("--output-dir", default=None, help="write report.md, report.json, card_section.md, plots/ here")
    p_cmp.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p_cmp.add_argument("--n-boot", "--n_boot", type=int, default=1000, help="bootstrap resamples (0: no intervals)")
    p_cmp.add_argument("--confidence-level", "--confidence_level", type=float, default=0.95)
    p_cmp.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p_cmp.add_argument("--p-adjust", "--p_adjust", default="holm", choices=["holm", "bh", "none"],
                       help="McNemar p-values across groups: Holm, Benjamini-Hochberg or none")
    p_cmp.add_argument("--min-group-size", "--min_group_size", type=int, default=30,
                       help="groups with fewer items get no interval")
    p_cmp.set_defaults(func=_cmd_compare_samples)

    def configs(*names: str) -> tuple:
        if not (build_all or chosen in names[:1]):
            return ()
        from .audit import AuditConfig
        from .data import DataConfig
        from .diagnostics import ExplainConfig
        from .quantization.onnx import ExportConfig

        known = {"data": DataConfig, "audit": AuditConfig, "explain": ExplainConfig, "export": ExportConfig}
        return tuple(known[n] for n in names[1:])

    audit_configs = configs("audit", "data", "audit")
    p_audit = _add_stage_parser(sub, "audit", "audit how PTQ recipes (presets or transformers quantization configs) and "
                                "pre-quantized checkpoints change per-group accuracy", audit_configs, bool(audit_configs))
    p_audit.add_argument(
        "--recipes", nargs="+", default=None,
        help="PTQ recipes: presets (w8a8, w4a8, w4, w2a8, w4a8@torchao), transformers quantization configs by alias "
             "(bnb-int8, bnb-nf4, bnb-fp4, torchao-int8, torchao-int8-dynamic, torchao-int4, torchao-int2, quanto-int8) "
             "or as ConfigClass:key=value:… (BitsAndBytesConfig:load_in_4bit=true); default w8a8 w4a8 w4 w2a8, none "
             "when --quantized-model is given")
    p_audit.add_argument(
        "--quantized-model", action="append", default=[], dest="quantized_model_paths", metavar="ID_OR_FOLDER",
        help="a pre-quantized checkpoint (local folder or Hub id: torchao, bitsandbytes, or a folder written by "
             "save_quantized) to audit against --model; repeat for more")
    p_audit.set_defaults(func=_cmd_audit)

    export_configs = configs("export", "data", "audit", "export")
    p_export = _add_stage_parser(
        sub, "export", "export the FP model to ONNX Runtime int8/int4 (onnx/) and audit the deployed files per group",
        export_configs, bool(export_configs),
    )
    p_export.set_defaults(func=_cmd_export)

    explain_configs = configs("explain", "data", "explain")
    p_explain = _add_stage_parser(
        sub, "explain", "measure the chain weight change → drift → logits → loss → group accuracy, per layer and group",
        explain_configs, bool(explain_configs),
    )
    which = p_explain.add_mutually_exclusive_group()
    which.add_argument("--recipe", default="w2a8", help="a preset to quantize a copy with (w8a8, w4a8, w4, w2a8, ...)")
    which.add_argument("--quantized-model", default=None, help="instead: a folder/Hub repo written by save_quantized")
    p_explain.set_defaults(func=_cmd_explain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input (a :class:`~hf_fairquant.FairQuantError`, a Hub refusal
    included, printed without a traceback); anything else is a bug and shows its traceback."""
    from .errors import FairQuantError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    joined = args.command in _SHARDED_COMMANDS and under_launcher()
    if joined:  # accelerate launch -m hf_fairquant.cli …: every process evaluates its share
        init_from_launcher()
    try:
        return args.func(args)
    except FairQuantError as err:  # also HubPushError (a push the Hub refused) and MissingFileError
        print(f"hf-fairquant {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if joined:
            _leave_process_group()


#: Commands that run stages (and so shard their passes) under ``accelerate launch`` / ``torchrun``.
_SHARDED_COMMANDS = ("run", "train", "audit", "export", "explain")


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
