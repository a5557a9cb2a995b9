"""``hf-fairquant run|audit``: parse arguments, call the pipeline or the audit; nothing more."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def _split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import load_recipe, run

    run(load_recipe(args.recipe, output_dir=args.output_dir))
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from .pipeline import AuditSection, ModelSection, RunRecipe, run
    from .data import DataConfig

    data = DataConfig(
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
    audit_cfg = AuditSection(
        recipes=_split_list(args.recipes), calibration_size=args.calibration_size,
        batch_size=args.batch_size, n_boot=args.n_boot, seed=args.seed,
    )
    run(RunRecipe(data=data, model=ModelSection(name_or_path=args.model), audit=audit_cfg, output_dir=args.output_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-fairquant", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_run = sub.add_parser("run", help="run a YAML recipe end to end (train/load, audit)")
    p_run.add_argument("recipe", type=Path)
    p_run.add_argument("--output-dir", default=None)
    p_run.set_defaults(func=_cmd_run)

    p_audit = sub.add_parser("audit", help="audit how PTQ recipes change per-group accuracy")
    p_audit.add_argument("--model", required=True, help="Hub model id or local folder")
    p_audit.add_argument("--dataset", required=True, help="offline source (fashion_mnist, digits), local path or Hub id")
    p_audit.add_argument("--group-column", default="group", help="column(s) defining groups, comma-separated for intersections")
    p_audit.add_argument("--recipes", default="w8a8,w4a8,w4,w2a8")
    p_audit.add_argument("--output-dir", required=True)
    p_audit.add_argument("--label-column", default="label")
    p_audit.add_argument("--image-column", default="image")
    p_audit.add_argument("--text-column", default=None)
    p_audit.add_argument("--split", default="test", help="split to evaluate")
    p_audit.add_argument("--calibration-split", default="train", help="split to draw calibration examples from")
    p_audit.add_argument("--calibration-size", type=int, default=512)
    p_audit.add_argument("--long-tail-classes", default=None, help="derive head/tail groups: classes kept rare in train")
    p_audit.add_argument("--long-tail-fraction", type=float, default=0.05)
    p_audit.add_argument("--n-boot", type=int, default=1000)
    p_audit.add_argument("--batch-size", type=int, default=256)
    p_audit.add_argument("--seed", type=int, default=0)
    p_audit.set_defaults(func=_cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"hf-fairquant {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
