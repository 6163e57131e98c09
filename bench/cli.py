"""The `seqbench` command line.

    seqbench list models | tasks | suites | measures
    seqbench validate SUITE
    seqbench run [SUITE] [--out DIR] [--device cpu|cuda|auto] [--set a.b=v] [--resume RUN_DIR]
                 [--executor local|ray] [--parallel N]
    seqbench report RUN_DIR [RUN_DIR …]
    seqbench compare BASELINE CURRENT [--fail metric:±N%] [--format table|markdown|json]
    seqbench baseline save RUN_DIR --name NAME
    seqbench export --format github-action-benchmark RUN_DIR
    seqbench env

Exit codes: 0 ok, 1 a cell failed or a regression was found, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from seqbench.errors import SeqbenchError

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2


def cmd_list(args: argparse.Namespace) -> int:
    from seqbench import models, tasks
    from seqbench.bench.measures import MEASURES
    from seqbench.bench.run.config import shipped_suites

    what = {"models": models.names, "tasks": tasks.names, "suites": shipped_suites,
            "measures": lambda: sorted(MEASURES)}[args.what]
    print("\n".join(what()))
    return EXIT_OK


def default_parallel(suite: Any) -> int:
    """Workers of a run without --parallel: on CPU one per `threads` cores (the shipped CPU suites use
    1 thread, so one worker per core); on CUDA 1 (pass --parallel N for N GPUs)."""
    if suite.device == "cuda":
        return 1
    return max(1, (os.cpu_count() or 1) // (suite.threads or 1))


def cmd_validate(args: argparse.Namespace) -> int:
    from seqbench.bench.run.config import load_suite
    from seqbench.bench.run.matrix import expand

    suite = load_suite(args.suite, args.set)
    cells = expand(suite, "cpu" if suite.device == "auto" else suite.device)
    by_measure: dict[str, int] = {}
    for c in cells:
        by_measure[c.measure] = by_measure.get(c.measure, 0) + 1
    detail = ", ".join(f"{m} {n}" for m, n in by_measure.items())
    print(f"{suite.path}: ok — {len(suite.models)} models, {len(suite.tasks)} tasks, {len(cells)} cells ({detail})")
    from seqbench.bench.run.estimate import RUN_OVERHEAD_S, describe, suite_seconds

    parallel = args.parallel or default_parallel(suite)
    total, per = suite_seconds(cells, parallel)
    cost = ", ".join(f"{m} {describe(t)}" for m, t in sorted(per.items(), key=lambda kv: -kv[1]))
    print(f"expected duration on the reference 2-core CPU (1 thread per worker): about "
          f"{describe(total + RUN_OVERHEAD_S)} with --parallel {parallel} (cell time by measure: {cost})")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from seqbench.bench.report.summary import summary_table
    from seqbench.bench.run.runner import execute, prepare

    suite, run_dir = prepare(args.suite, args.out, args.set, args.device, args.resume)
    result = execute(suite, run_dir, parallel=args.parallel or default_parallel(suite), executor=args.executor,
                     address=args.address,
                     isolate=args.isolate)
    from seqbench.bench.run.runner import RESULTS, read_rows

    rows = read_rows(run_dir / RESULTS)
    print(summary_table(rows))
    report_ok = _write_report(run_dir)
    failed = {r["cell_id"] for r in rows if r["status"] in ("oom", "error", "timeout")}
    skipped = {r["cell_id"] for r in rows if r["status"] == "skipped"} - failed
    if result.interrupted:
        print(f"\ninterrupted: {len(result.rows)} rows of this session kept in {run_dir / RESULTS}; "
              f"finish with: seqbench run --resume {run_dir}", file=sys.stderr)
        return 130
    done = f"{result.cells - result.skipped_done} cells run" + (
        f", {result.skipped_done} already done" if result.skipped_done else "")
    print(f"\n{done}; {len(failed)} failed, {len(skipped)} skipped (expected: the measure does not apply). "
          f"results: {run_dir / RESULTS}"
          + (f"\nreport: {run_dir / 'report' / 'index.html'}" if report_ok else ""))
    return EXIT_FAIL if failed or not report_ok else EXIT_OK


def _write_report(run_dir: Any) -> bool:
    try:
        from seqbench.bench.report.build import build_report
    except ImportError:
        return False
    try:
        build_report([run_dir], warn=lambda w: print(f"seqbench: warning: {w}", file=sys.stderr))
        return True
    except Exception as exc:  # noqa: BLE001 — the rows are safe; say why the report failed
        print(f"seqbench: report failed: {type(exc).__name__}: {exc}; "
              f"retry with: seqbench report {run_dir}", file=sys.stderr)
        return False


def cmd_env(args: argparse.Namespace) -> int:
    from seqbench.bench.run.env import environment, resolve_device

    print(json.dumps(environment(resolve_device(args.device)), indent=2))
    return EXIT_OK


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (argparse then prints 'invalid positive_int value' and exits 2)."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: 'seqbench run: error: …; see `seqbench run --help`' (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="seqbench", description="Benchmark suite for sequence models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("list", help="list registered models, tasks, shipped suites or measures")
    p.add_argument("what", choices=["models", "tasks", "suites", "measures"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("validate", help="check a suite without running it")
    p.add_argument("suite", help="shipped suite name or path to a YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a suite key")
    p.add_argument("--parallel", type=positive_int, default=None,
                   help="workers the expected duration assumes (default: as `seqbench run`)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run a suite (default: quick) and write results and a report")
    p.add_argument("suite", nargs="?", default=None, help="shipped suite name or path (default: quick)")
    p.add_argument("--out", help="run directory (default: results/runs/<suite>-<time>)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override the suite's device")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite key, e.g. measures.accuracy.steps=500 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run: only unfinished cells run")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--address", help="Ray cluster address for --executor ray (auto, ray://HOST:PORT)")
    p.add_argument("--parallel", type=positive_int, default=None,
                   help="local worker processes (default on CPU: cores / the suite's threads; on CUDA: 1; "
                        "one GPU each)")
    p.add_argument("--isolate", action="store_true", help="a fresh worker process per cell")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("env", help="print the environment fingerprint")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.set_defaults(func=cmd_env)

    from seqbench.bench.compare.cli import register_cli as register_compare
    from seqbench.bench.report.build import register_cli as register_report

    register_report(sub)
    register_compare(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SeqbenchError as exc:
        print(f"seqbench: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_BAD_INPUT))
    except KeyboardInterrupt:
        print("seqbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `seqbench compare … | head`: the reader left; not an error of ours
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
