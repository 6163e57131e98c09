"""Does the compare gate catch real regressions and ignore noise? (issue 6, "Must show")

Runs the smoke suite 2N+1 times, interleaved, on this machine:

    A0  B0  A1  B1  …  A(N-1)  B(N-1)  AN

A runs are the code as it is; B runs inject test-only faults through the suite's
`faults:` key (never set by a shipped suite):
    slowdown x1.3      every timed sample of one model's throughput and latency cells
    extra_bytes 64 MiB held during one model's memory cells
    accuracy_drop 0.05 subtracted from one model's accuracy values

then compares with the real CLI, `seqbench compare X Y --format json`, two ways:

  single (the issue's protocol), one run against one run:
    A/A  (A_i, A_i+1), N comparisons: any exit code other than 0 is a false alarm;
    A/B  (A_i, B_i),   N comparisons: each fault must be caught (a regression naming a
         cell of the faulted model and measure) with exit code 1, and nothing else
         may be flagged;
  pooled (what .github/workflows/bench.yml does), two interleaved runs per side:
    A/A  (A_i,A_i+2) vs (A_i+1,A_i+3), N-2 comparisons; A/B (A_i,A_i+1) vs (B_i,B_i+1), N-1.

    python scripts/ci_gate_check.py                  # N=10, full smoke suite
    python scripts/ci_gate_check.py --pairs 2 --lean # a quick look (no static/gradient_flow cells)

Throughput samples per cell are raised to 10 (`--set measures.throughput.repeats=10`, on
both sides, so cell ids match): with the smoke suite's 3 samples no Mann–Whitney test
can be significant after Holm correction across ~40 timing metrics. Runs already
finished under --out are reused (an interrupted one is resumed), so the script can be
restarted. Results: OUT/summary.json and the tables printed at the end; the exit code
is 0 when the single protocol meets the issue's bar (0 false alarms, everything caught).
On a machine shared with other jobs pass `--set threads=1`: two OpenMP threads on a
contended 2-core machine make timings swing by 10x.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


def faults(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [
        {"match": {"model": args.slow_model, "measure": "throughput"}, "kind": "slowdown", "value": args.slowdown},
        {"match": {"model": args.slow_model, "measure": "latency"}, "kind": "slowdown", "value": args.slowdown},
        {"match": {"model": args.mem_model, "measure": "memory"}, "kind": "extra_bytes",
         "value": int(args.extra_mib * MiB)},
        {"match": {"model": args.acc_model, "measure": "accuracy"}, "kind": "accuracy_drop",
         "value": args.accuracy_drop},
    ]


# fault kind -> (model argument, measure, metrics that must be flagged)
EXPECTED = {
    "slowdown": ("slow_model", ("throughput", "latency"), ("tokens_per_s", "latency_p50_ms")),
    "extra_bytes": ("mem_model", ("memory",), ("peak_bytes",)),
    "accuracy_drop": ("acc_model", ("accuracy",), ("accuracy",)),
}


def overrides(args: argparse.Namespace, with_faults: bool) -> list[str]:
    sets = [f"measures.throughput.repeats={args.repeats}", *args.set]
    if args.lean:
        sets.append("exclude=[{measure: static}, {measure: gradient_flow}]")
    if with_faults:
        sets.append("faults=" + json.dumps(faults(args)))  # JSON is YAML
    return sets


def run_suite(args: argparse.Namespace, out: Path, with_faults: bool) -> float:
    """`seqbench run` into `out` (reused when complete, resumed when interrupted); wall seconds."""
    if (out / "results.jsonl").is_file() and (out / "report").exists():
        print(f"reuse {out}", file=sys.stderr)
        wall_file = out / "ci_gate_check_wall_s.txt"
        return float(wall_file.read_text()) if wall_file.is_file() else 0.0
    if (out / "suite.yaml").is_file():
        cmd = ["seqbench", "run", "--resume", str(out)]
    else:
        cmd = ["seqbench", "run", args.suite, "--out", str(out)]
        for s in overrides(args, with_faults):
            cmd += ["--set", s]
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(cmd)}", file=sys.stderr)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1) or not (out / "results.jsonl").is_file():
        sys.exit(f"seqbench run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    (out / "ci_gate_check_wall_s.txt").write_text(f"{wall:.1f}\n")
    return wall


def compare(base: str, cur: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(["seqbench", "compare", base, cur, "--format", "json"],
                          check=False, capture_output=True, text=True)
    if proc.returncode == 2:
        sys.exit(f"seqbench compare {base} {cur}: bad input: {proc.stderr.strip()}")
    return proc.returncode, json.loads(proc.stdout)


def model_of(label: str) -> str:
    return label.split()[1] if len(label.split()) > 1 else ""


def judge_ab(args: argparse.Namespace, doc: dict[str, Any]) -> dict[str, Any]:
    """Per fault kind: caught (any regression on a target cell) and flagged/expected rows;
    plus the regressions on cells no fault touched (false alarms)."""
    out: dict[str, Any] = {}
    targeted = set()
    for kind, (model_arg, measures, metrics) in EXPECTED.items():
        model = getattr(args, model_arg)
        targets = [c for c in doc["comparisons"] if model_of(c["label"]) == model
                   and c["label"].split()[0] in measures and c["metric"] in metrics]
        flagged = [c for c in targets if c["verdict"] == "regression"]
        targeted |= {(c["cell_id"], c["metric"], json.dumps(c["extras"], sort_keys=True)) for c in targets}
        out[kind] = {"caught": bool(flagged), "flagged": len(flagged), "expected": len(targets),
                     "cells": sorted({c["label"] for c in flagged}),
                     "missed": sorted(f"{c['label']} {c['metric']}: {c['verdict']}" for c in targets
                                      if c["verdict"] != "regression")}
    others = [f"{c['label']} {c['metric']}" for c in doc["comparisons"]
              if c["verdict"] in ("regression", "failed")
              and (c["cell_id"], c["metric"], json.dumps(c["extras"], sort_keys=True)) not in targeted]
    out["false_alarms"] = others
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=10, help="N: A/A and A/B comparisons each (default 10)")
    p.add_argument("--suite", default="smoke")
    p.add_argument("--out", default="results/runs/ci_gate_check", help="folder for the 2N+1 runs")
    p.add_argument("--repeats", type=int, default=10, help="throughput samples per cell (default 10)")
    p.add_argument("--slow-model", default="lstm")
    p.add_argument("--mem-model", default="gru")
    p.add_argument("--acc-model", default="rnn")
    p.add_argument("--slowdown", type=float, default=1.3)
    p.add_argument("--extra-mib", type=float, default=64.0)
    p.add_argument("--accuracy-drop", type=float, default=0.05)
    p.add_argument("--lean", action="store_true", help="skip the static and gradient_flow cells (not gated)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more suite overrides")
    args = p.parse_args()

    from seqbench.bench.run.config import load_suite

    suite = load_suite(args.suite, overrides(args, with_faults=True))  # fail fast on a bad model name
    for arg in ("slow_model", "mem_model", "acc_model"):
        if getattr(args, arg) not in suite.models:
            sys.exit(f"--{arg.replace('_', '-')} {getattr(args, arg)!r}: not a model of suite {args.suite!r} "
                     f"({', '.join(suite.models)})")

    root = Path(args.out)
    walls = []
    for i in range(args.pairs):
        walls.append(run_suite(args, root / f"A{i}", with_faults=False))
        walls.append(run_suite(args, root / f"B{i}", with_faults=True))
    walls.append(run_suite(args, root / f"A{args.pairs}", with_faults=False))

    def side(*names: str) -> str:
        return ",".join(str(root / n) for n in names)

    n = args.pairs
    protocols = {
        # the protocol: one run against one run
        "single": ([(side(f"A{i}"), side(f"A{i + 1}")) for i in range(n)],
                   [(side(f"A{i}"), side(f"B{i}")) for i in range(n)]),
        # the CI workflow's: two interleaved runs per side, pooled (a regression must show in both pairs)
        "pooled": ([(side(f"A{i}", f"A{i + 2}"), side(f"A{i + 1}", f"A{i + 3}")) for i in range(n - 2)],
                   [(side(f"A{i}", f"A{i + 1}"), side(f"B{i}", f"B{i + 1}")) for i in range(n - 1)]),
    }
    summary: dict[str, Any] = {"suite": args.suite, "pairs": n, "faults": faults(args),
                               "overrides": overrides(args, False), "run_wall_s": [round(w, 1) for w in walls]}
    ok = True
    for name, (aa_specs, ab_specs) in protocols.items():
        aa, ab = [], []
        for base, cur in aa_specs:
            code, doc = compare(base, cur)
            aa.append({"pair": f"{short(base)} vs {short(cur)}", "exit": code, "summary": doc["summary"],
                       "regressions": [f"{c['label']} {c['metric']}" for c in doc["comparisons"]
                                       if c["verdict"] in ("regression", "failed")]})
        for base, cur in ab_specs:
            code, doc = compare(base, cur)
            ab.append({"pair": f"{short(base)} vs {short(cur)}", "exit": code, "summary": doc["summary"],
                       **judge_ab(args, doc)})
        result = {"aa": aa, "ab": ab, "aa_false_alarms": sum(x["exit"] != 0 for x in aa),
                  "ab_exit_1": sum(x["exit"] == 1 for x in ab),
                  **{f"ab_caught_{k}": sum(x[k]["caught"] for x in ab) for k in EXPECTED},
                  "ab_false_alarms": sum(len(x["false_alarms"]) for x in ab)}
        summary[name] = result
        print_protocol(name, args, result)
        if name == "single":
            ok = (result["aa_false_alarms"] == 0 and result["ab_exit_1"] == n and result["ab_false_alarms"] == 0
                  and all(result[f"ab_caught_{k}"] == n for k in EXPECTED))
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nrun wall times: {', '.join(f'{w:.0f}s' for w in walls)}; summary: {root / 'summary.json'}")
    return 0 if ok else 1


def short(spec: str) -> str:
    return ",".join(Path(p).name for p in spec.split(","))


def print_protocol(name: str, args: argparse.Namespace, r: dict[str, Any]) -> None:
    print(f"\n== {name} ==")
    print(f"{'comparison':<20} {'exit':>4}  {'regr':>4} {'incon':>5} {'pass':>4}  regressions / caught (flagged/expected)")
    for x in r["aa"]:
        s = x["summary"]
        print(f"{x['pair']:<20} {x['exit']:>4}  {s['regression']:>4} {s['inconclusive']:>5} {s['pass']:>4}  "
              + ("; ".join(x["regressions"]) or "-"))
    for x in r["ab"]:
        s = x["summary"]
        kinds = ", ".join(f"{k} {'yes' if x[k]['caught'] else 'NO'} ({x[k]['flagged']}/{x[k]['expected']})"
                          for k in EXPECTED)
        extra = f"; false alarms: {', '.join(x['false_alarms'])}" if x["false_alarms"] else ""
        print(f"{x['pair']:<20} {x['exit']:>4}  {s['regression']:>4} {s['inconclusive']:>5} {s['pass']:>4}  "
              f"{kinds}{extra}")
    n_aa, n_ab = len(r["aa"]), len(r["ab"])
    print(f"A/A: {r['aa_false_alarms']}/{n_aa} false alarms (exit != 0)")
    print(f"A/B: exit 1 in {r['ab_exit_1']}/{n_ab}; caught slowdown x{args.slowdown} of {args.slow_model} "
          f"{r['ab_caught_slowdown']}/{n_ab}, +{args.extra_mib:g} MiB on {args.mem_model} "
          f"{r['ab_caught_extra_bytes']}/{n_ab}, accuracy -{args.accuracy_drop} on {args.acc_model} "
          f"{r['ab_caught_accuracy_drop']}/{n_ab}; other regressions flagged: {r['ab_false_alarms']}")
    example = next((x for x in r["ab"] if x["slowdown"]["cells"]), None)
    if example:
        print("cells named (first A/B caught):", "; ".join(
            example["slowdown"]["cells"] + example["extra_bytes"]["cells"] + example["accuracy_drop"]["cells"]))


if __name__ == "__main__":
    sys.exit(main())
