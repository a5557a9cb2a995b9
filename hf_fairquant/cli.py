"""``hf-fairquant run|train|audit|explain|push``: parse arguments, call the pipeline, explain or push; nothing more."""

from __future__ import annotations

from .errors import FairQuantError

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence


def _split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


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
    from .pipeline import load_recipe, run

    recipe = load_recipe(args.recipe, output_dir=args.output_dir)
    if args.dry_run:
        from .pipeline import dry_run

        print(dry_run(recipe, overwrite=args.overwrite))
        return 0
    run(recipe, overwrite=args.overwrite, push_to_hub=args.push_to_hub, token=args.token, command=_command_line())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """Only the mitigation: FP model (load or train) → FairQuantTrainer → quantized model + card."""
    from .pipeline import load_recipe, run

    recipe = load_recipe(args.recipe, output_dir=args.output_dir)
    if recipe.mitigation is None:
        raise FairQuantError(f"recipe {args.recipe} has no `mitigation` section: nothing for `train` to do")
    recipe.audit.recipes = []
    recipe.explain.enabled = False
    run(recipe, overwrite=args.overwrite, push_to_hub=args.push_to_hub, token=args.token, command=_command_line())
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .hub import push_folder

    url = push_folder(args.folder, args.repo_id, token=args.token, private=args.private, revision=args.revision)
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    return 0


def _data_config(args: argparse.Namespace):
    """The DataConfig of the audit/explain data options (``--split`` evaluated, calibration from
    ``--calibration-split``)."""
    from .data import DataConfig

    return DataConfig(
        source=args.dataset,
        group_columns=_split_list(args.group_column),
        label_column=args.label_column,
        image_column=None if args.text_column else args.image_column,
        text_column=args.text_column,
        train_split=args.calibration_split,
        eval_split=args.split,
        long_tail_classes=_split_list(args.long_tail_classes or ""),
        long_tail_fraction=args.long_tail_fraction,
        seed=args.seed,
    )


def _cmd_audit(args: argparse.Namespace) -> int:
    from .pipeline import AuditSection, ExplainSection, ModelSection, RunRecipe, run

    audit_cfg = AuditSection(
        recipes=_split_list(args.recipes), calibration_size=args.calibration_size,
        batch_size=args.batch_size, n_boot=args.n_boot, seed=args.seed,
    )
    recipe = RunRecipe(
        data=_data_config(args), model=ModelSection(name_or_path=args.model), audit=audit_cfg,
        explain=ExplainSection(enabled=False), output_dir=args.output_dir,
    )
    run(recipe, overwrite=args.overwrite, command=_command_line())
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .diagnostics import explain
    from .pipeline import load_pretrained
    from .quantization import QuantRecipe, load_quantized

    from ._atomic import atomic_directory
    from .pipeline import check_output_dir

    started = time.perf_counter()
    check_output_dir(args.output_dir, args.overwrite)  # before any data or model is loaded
    if args.quantized_model is None:
        QuantRecipe.parse(args.recipe)  # an unknown preset fails before the data is loaded
    model, splits, spec = load_pretrained(args.model, _data_config(args))
    quantized = load_quantized(args.quantized_model) if args.quantized_model else args.recipe
    result = explain(
        model, quantized, splits[args.split], spec, calibration_dataset=splits[args.calibration_split],
        calibration_size=args.calibration_size, examples_per_group=args.examples_per_group,
        parameters=args.parameters, eigen_method=args.method, tol=args.tol, max_iterations=args.max_iterations,
        probes=args.probes, quantized_curvature=args.quantized_curvature, batch_size=args.batch_size, seed=args.seed,
    )
    result.settings["total_wall_time_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.output_dir)
    with atomic_directory(out) as tmp:  # the folder appears whole, or not at all
        result.save(tmp)
    print(result.to_markdown())
    print(f"wrote {out / 'explain.json'}, {out / 'explain.md'} and {out / 'explain_plots'} "
          f"in {result.settings['total_wall_time_s']} s (explain itself: {result.settings['wall_time_s']} s)")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _examples(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return _positive_int(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'all', got {text!r}") from None


def _add_data_arguments(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--model", required=True, help="Hub model id or local folder")
    parser.add_argument("--dataset", required=True, help="offline source (fashion_mnist, digits), local path or Hub id")
    parser.add_argument("--group-column", default="group", help="column(s) defining groups, comma-separated for intersections")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--text-column", default=None)
    parser.add_argument("--split", default="test", help="split to evaluate")
    parser.add_argument("--calibration-split", default="train", help="split to draw calibration examples from")
    parser.add_argument("--calibration-size", type=int, default=512)
    parser.add_argument("--long-tail-classes", default=None, help="derive head/tail groups: classes kept rare in train")
    parser.add_argument("--long-tail-fraction", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
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

    p_audit = sub.add_parser("audit", help="audit how PTQ recipes change per-group accuracy")
    _add_data_arguments(p_audit, batch_size=256)
    p_audit.add_argument("--recipes", default="w8a8,w4a8,w4,w2a8")
    p_audit.add_argument("--n-boot", type=int, default=1000)
    p_audit.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p_audit.set_defaults(func=_cmd_audit)

    p_explain = sub.add_parser(
        "explain", help="measure the chain weight change → drift → logits → loss → group accuracy, per layer and group"
    )
    _add_data_arguments(p_explain, batch_size=128)
    which = p_explain.add_mutually_exclusive_group()
    which.add_argument("--recipe", default="w2a8", help="a preset to quantize a copy with (w8a8, w4a8, w4, w2a8, ...)")
    which.add_argument("--quantized-model", default=None, help="instead: a folder/Hub repo written by save_quantized")
    p_explain.add_argument("--examples-per-group", type=_examples, default=None,
                           help="examples per group for gradients and curvature: N or 'all' (default: all, at most 512)")
    p_explain.add_argument("--parameters", choices=["quantized", "all"], default="quantized",
                           help="parameters of gradients and Hessians (default: the quantized weights)")
    p_explain.add_argument("--method", choices=["lanczos", "power"], default="lanczos", help="λ_max estimator")
    p_explain.add_argument("--tol", type=_positive_float, default=1e-3, help="relative tolerance of λ_max")
    p_explain.add_argument("--max-iterations", type=_positive_int, default=100,
                           help="Lanczos restarts / power-iteration steps")
    p_explain.add_argument("--probes", type=_positive_int, default=32, help="Hutchinson probes for the Hessian trace")
    p_explain.add_argument("--quantized-curvature", action="store_true",
                           help="also the curvature of the quantized (straight-through) model")
    p_explain.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p_explain.set_defaults(func=_cmd_explain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .hub import HubPushError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, HubPushError) as err:
        print(f"hf-fairquant {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
