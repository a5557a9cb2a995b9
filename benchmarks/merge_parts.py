"""Merge one part's JSON from runs of benchmarks/reproduce.py over disjoint seeds (e.g. seeds run
as separate processes side by side) into one file that render_results.py reads like a single run.

The seeds are united (a seed in two inputs is an error), ``meta.wall_time_s`` is the sum of the
runs' own times, ``meta.command_wall_time_s`` the longest run's, ``meta.command`` lists every
command; the other metadata must agree apart from the command, the commit and the seed list.

    PYTHONPATH=. python benchmarks/merge_parts.py --part adult --output docs/results \
        outputs/run_seed0 outputs/run_seed1 outputs/run_seed2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_fairquant._atomic import atomic_write_text  # noqa: E402

#: meta fields that may differ between the merged runs.
RUN_SPECIFIC = {"command", "wall_time_s", "command_wall_time_s", "versions"}


def merge(parts: list[dict]) -> dict:
    """One part from several runs over disjoint seeds."""
    if not parts:
        raise SystemExit("nothing to merge")
    first = parts[0]
    seeds: dict = {}
    for part in parts:
        clash = set(seeds) & set(part["seeds"])
        if clash:
            raise SystemExit(f"seed(s) {sorted(clash)} appear in more than one input")
        seeds |= part["seeds"]
        for key in set(first) - {"meta", "seeds"}:
            if part.get(key) != first[key]:
                raise SystemExit(f"the inputs differ in {key!r}: not runs of the same part")
        settings = {k: v for k, v in part["meta"]["settings"].items() if k != "seeds"}
        if settings != {k: v for k, v in first["meta"]["settings"].items() if k != "seeds"}:
            raise SystemExit("the inputs were run with different settings")
    order = sorted(seeds, key=int)
    meta = {k: v for k, v in first["meta"].items() if k not in RUN_SPECIFIC}
    meta |= {
        "command": " ; ".join(p["meta"]["command"] for p in parts),
        "wall_time_s": round(sum(p["meta"]["wall_time_s"] for p in parts), 1),
        "command_wall_time_s": max(p["meta"]["command_wall_time_s"] for p in parts),
        "versions": first["meta"]["versions"] | {"git_commit": ", ".join(dict.fromkeys(p["meta"]["versions"]["git_commit"] for p in parts))},
        "settings": first["meta"]["settings"] | {"seeds": [int(s) for s in order]},
    }
    return {**first, "meta": meta, "seeds": {s: seeds[s] for s in order}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", required=True, help="the part's name: reads <input>/<part>.json")
    parser.add_argument("--output", required=True, help="folder to write <part>.json into")
    parser.add_argument("inputs", nargs="+", help="result folders of the runs")
    args = parser.parse_args(argv)
    parts = [json.loads((Path(d) / f"{args.part}.json").read_text()) for d in args.inputs]
    merged = merge(parts)
    out = Path(args.output) / f"{args.part}.json"
    atomic_write_text(out, json.dumps(merged, indent=1, allow_nan=False))
    print(f"wrote {out}: seeds {merged['meta']['settings']['seeds']}")


if __name__ == "__main__":
    main()
