"""`seqbench compare`, `seqbench ab`, `seqbench baseline save`, `seqbench export`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from seqbench.bench import compare as compare_pkg
from seqbench.bench.compare.ab import register_ab
from seqbench.bench.compare.export import export_github_action_benchmark, save_baseline
from seqbench.bench.compare.judge import ACCURACY_DROP, compare, parse_fail
from seqbench.bench.compare.load import load_side
from seqbench.bench.compare.render import RENDER
from seqbench.errors import CompareInputError

# --- CLI ----------------------------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace) -> int:
    rules = [parse_fail(s) for s in args.fail]
    result = compare(load_side(args.baseline), load_side(args.current), fail=rules,
                     allow_env_change=args.allow_env_change, normalize=args.normalize, strict=args.strict,
                     accuracy_drop=args.accuracy_drop, allow_partial=args.allow_partial)
    print(RENDER[args.format](result))
    return result.exit_code


def cmd_baseline_save(args: argparse.Namespace) -> int:
    out = save_baseline(args.run_dir, args.name, args.root)
    print(f"baseline saved: {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    entries = export_github_action_benchmark(args.run_dir, args.direction)
    text = json.dumps(entries, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add `compare`, `ab`, `baseline save` and `export` to the seqbench CLI."""
    p = subparsers.add_parser("compare", help="compare two runs; exit 1 on a regression",
                              description=compare_pkg.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baseline", help="run dir, results .jsonl, pytest-benchmark .json; 'a,b' pools runs")
    p.add_argument("current", help="same kinds as BASELINE")
    p.add_argument("--fail", action="append", default=[], metavar="METRIC:±N%",
                   help="threshold of one metric, e.g. tokens_per_s:-10%% or latency_p99_ms:+15%% (repeatable)")
    p.add_argument("--format", choices=sorted(RENDER), default="table")
    p.add_argument("--allow-env-change", action="store_true",
                   help="judge timings even when device_name or torch_version differ")
    p.add_argument("--normalize", action="store_true",
                   help="rescale timings by the calibration_s ratio of env.json (same machine class)")
    p.add_argument("--strict", action="store_true", help="exit 1 on inconclusive verdicts too")
    p.add_argument("--allow-partial", action="store_true",
                   help="accept comparing runs that have no (cell, metric) in common (else exit 2)")
    p.add_argument("--accuracy-drop", type=float, default=ACCURACY_DROP,
                   help="tolerated absolute accuracy drop (default %(default)s)")
    p.set_defaults(func=cmd_compare)

    register_ab(subparsers)

    p = subparsers.add_parser("baseline", help="manage saved baselines")
    bsub = p.add_subparsers(dest="baseline_command", required=True, parser_class=type(p))
    s = bsub.add_parser("save", help="save a run as results/baselines/<machine_class>/NAME.jsonl")
    s.add_argument("run_dir")
    s.add_argument("--name", required=True)
    s.add_argument("--root", default="results/baselines", help="baselines folder (default %(default)s)")
    s.set_defaults(func=cmd_baseline_save)

    p = subparsers.add_parser("export", help="export a run for other tools")
    p.add_argument("--format", choices=["github-action-benchmark"], required=True)
    p.add_argument("run_dir")
    p.add_argument("--direction", choices=["bigger", "smaller"], default="bigger",
                   help="bigger: tokens_per_s, accuracy (tool customBiggerIsBetter); smaller: latency, time, "
                        "peak_bytes (tool customSmallerIsBetter)")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_export)


def run_cli(argv: list[str]) -> int:
    """Parse and run one of these subcommands with the CLI's exit-code mapping (tests, scripts)."""
    parser = argparse.ArgumentParser(prog="seqbench")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CompareInputError as exc:
        print(f"seqbench: error: {exc}", file=sys.stderr)
        return 2
