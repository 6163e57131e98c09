"""Does `seqbench ab` hold on a noisy shared machine, and does today's whole-run compare? (issue 16)

The script starts its own background load — one process of bursty busy loops, busy and idle
spells each log-uniform between 10 ms and 2 s (one core's worth about half the time; not
pinned, so the scheduler places it like any other job) — and under it runs, in a random order
within each of N iterations:

    ab A/A     seqbench ab CHECKOUT CHECKOUT SUITE --timing-only
    ab A/B     the same with the suite's test-only slowdown faults on HEAD only: x1.3 on one
               model's timings and x1.15 on another's (--fault MODEL:FACTOR, default lstm:1.3
               and gru:1.15; two models in one run halve the experiment's time)
    run A_i    seqbench run SUITE, its throughput and latency cells (10 repeats), for compare
    run B_i    the same with the faults

then asks compare the same questions, one run against one run (single) and two interleaved
runs per side pooled (pooled, what the workflow did before `ab`):

    A/A    compare A_i A_i+1                       |  compare A_i,A_i+2  A_i+1,A_i+3
    A/B    compare A_i B_i                         |  compare A_i,A_i+1  B_i,B_i+1

A false alarm is an exit code other than 0 on an A/A comparison, or a regression on a cell of a
model no fault touched. A fault is caught when the comparison exits 1 with a regression naming a
timing cell of its model. Every job's output is kept under --out (a restarted script reuses
finished ones); OUT/summary.json and the table printed at the end hold the results.

    python scripts/ab_gate_check.py                       # N=20, the smoke suite
    python scripts/ab_gate_check.py -n 2 --no-compare     # a quick look at ab alone

Run it with the Python whose seqbench is the checkout under test (it calls `python -m seqbench`),
and, on a machine shared with other timing jobs, under `flock /tmp/seqbench-timing.lock`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LOAD = r"""
import math, random, sys, time
rng = random.Random(int(sys.argv[1]))
spell = lambda: math.exp(rng.uniform(math.log(0.01), math.log(2.0)))  # log-uniform 10 ms .. 2 s
while True:
    end = time.perf_counter() + spell()
    while time.perf_counter() < end:
        pass
    time.sleep(spell())
"""
TIMING_METRICS = ("tokens_per_s", "latency_p50_ms", "latency_p99_ms", "latency_ms")


def seqbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "seqbench", *args]


def sets(args: argparse.Namespace) -> list[str]:
    return [x for s in args.set for x in ("--set", s)]


def fault_sets(args: argparse.Namespace, faulted: bool) -> list[str]:
    if not faulted:
        return []
    faults = [{"match": {"model": m}, "kind": "slowdown", "value": f} for m, f in args.faults]
    return ["--set", "faults=" + json.dumps(faults)]  # JSON is YAML


def run_ab(args: argparse.Namespace, out: Path, faulted: bool) -> dict[str, Any]:
    """One `seqbench ab` (reused when OUT has it): exit code, JSON document, wall seconds, load."""
    done = out.with_suffix(".done.json")
    if done.is_file():
        return json.loads(done.read_text())
    cmd = seqbench("ab", args.checkout, args.checkout, args.suite, "--timing-only", "--format", "json", "--quiet",
                   *sets(args), *fault_sets(args, faulted), *args.ab_args)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    out.write_text(proc.stdout)
    rec = {"exit": proc.returncode, "wall_s": wall, "load": os.getloadavg()[0], "doc": json.loads(proc.stdout)}
    done.write_text(json.dumps(rec))
    return rec


def run_suite(args: argparse.Namespace, out: Path, faulted: bool) -> float:
    """One `seqbench run` of the suite's timing cells into `out` (reused when complete); wall seconds."""
    wall_file = out / "ab_gate_check_wall_s.txt"
    if wall_file.is_file():
        return float(wall_file.read_text())
    only_timing = ["--set", "measures={throughput: " + json.dumps(args.suite_measures["throughput"])
                   + ", latency: " + json.dumps(args.suite_measures["latency"]) + "}",
                   "--set", "measures.throughput.repeats=10"]  # as the workflow did: enough samples for Holm
    cmd = seqbench("run", args.suite, "--out", str(out), *sets(args), *only_timing, *fault_sets(args, faulted))
    if (out / "suite.yaml").is_file():
        cmd = seqbench("run", "--resume", str(out))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1) or not (out / "results.jsonl").is_file():
        sys.exit(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    wall_file.write_text(f"{wall:.1f}\n")
    return wall


def compare(base: str, cur: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(seqbench("compare", base, cur, "--format", "json"), capture_output=True, text=True,
                          check=False)
    if proc.returncode == 2:
        sys.exit(f"seqbench compare {base} {cur}: bad input: {proc.stderr.strip()}")
    return proc.returncode, json.loads(proc.stdout)


def model_of(label: str) -> str:
    parts = label.split()
    return parts[1] if len(parts) > 1 else ""


def judge(doc: dict[str, Any], code: int, faults: list[tuple[str, float]]) -> dict[str, Any]:
    """Per faulted model: caught (exit 1 and a regression on one of its timing cells), the cells
    named, flagged of its timing cells; false alarms: a regression or failure on any other model,
    and on an A/A (no faults) any exit code other than 0."""
    flagged = [c for c in doc["comparisons"] if c["verdict"] in ("regression", "failed")]
    models = {m for m, _ in faults}
    out: dict[str, Any] = {"exit": code, "summary": doc.get("summary", {}),
                           "others": [f"{c['label']} {c['metric']}" for c in flagged if model_of(c["label"]) not in models]}
    out["false_alarm"] = bool(out["others"]) or (not faults and code != 0)
    for model, factor in faults:
        timings = [c for c in doc["comparisons"] if model_of(c["label"]) == model and c["metric"] in TIMING_METRICS]
        hits = [c for c in timings if c["verdict"] == "regression"]
        out[f"{model}x{factor:g}"] = {"caught": code == 1 and bool(hits), "flagged": len(hits),
                                      "targets": len(timings),
                                      "named": sorted(f"{c['label']} {c['metric']}" for c in hits)}
    return out


def tally(aa: list[dict[str, Any]], ab: list[dict[str, Any]], faults: list[tuple[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"aa_n": len(aa), "aa_false_alarms": sum(r["false_alarm"] for r in aa), "ab_n": len(ab),
                           "ab_other_cells_flagged": sum(len(r["others"]) for r in ab)}
    for model, factor in faults:
        key = f"{model}x{factor:g}"
        out[key] = {"caught": sum(r[key]["caught"] for r in ab),
                    "flagged_of_targets": f"{sum(r[key]['flagged'] for r in ab)}/{sum(r[key]['targets'] for r in ab)}"}
    return out


def parse_fault(text: str) -> tuple[str, float]:
    model, _, factor = text.partition(":")
    return model, float(factor)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--iterations", type=int, default=20, help="N: runs of each kind (default 20)")
    p.add_argument("--checkout", default=str(Path(__file__).resolve().parents[1]),
                   help="the checkout both sides run (default: this script's)")
    p.add_argument("--suite", default="smoke")
    p.add_argument("--fault", dest="faults", action="append", type=parse_fault, metavar="MODEL:FACTOR",
                   help="a slowdown fault of the A/B runs (repeatable; default lstm:1.3 and gru:1.15)")
    p.add_argument("--out", default="results/runs/ab_gate_check", help="folder for every job's output")
    p.add_argument("--no-compare", action="store_true", help="only the ab runs")
    p.add_argument("--no-load", action="store_true", help="do not start the background load")
    p.add_argument("--seed", type=int, default=0, help="seed of the job order and of the load")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="suite override for every ab and run (repeatable)")
    p.add_argument("--ab-arg", dest="ab_args", action="append", default=[], metavar="ARG",
                   help="extra argument for every seqbench ab (repeatable), e.g. --ab-arg=--rounds=16:64")
    args = p.parse_args()
    args.faults = args.faults or [("lstm", 1.3), ("gru", 1.15)]
    from seqbench.bench.run.config import load_suite

    suite = load_suite(args.suite, args.set)  # fail fast on a bad override or model name
    for model, _ in args.faults:
        if model not in suite.models:
            sys.exit(f"--fault {model}: not a model of suite {args.suite!r} ({', '.join(suite.models)})")
    args.suite_measures = suite.measures
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    load = None if args.no_load else subprocess.Popen([sys.executable, "-c", LOAD, str(args.seed)])
    t_start = time.perf_counter()
    records: dict[str, list[dict[str, Any]]] = {"aa": [], "ab": []}
    run_walls: list[float] = []
    try:
        n = args.iterations
        for i in range(n + 1):
            jobs = [] if i == n else [("ab", "aa"), ("ab", "ab")]
            if not args.no_compare:
                jobs += [("run", "A")] + ([] if i == n else [("run", "B")])
            rng.shuffle(jobs)
            for what, kind in jobs:
                stamp = time.strftime("%H:%M:%S")
                if what == "ab":
                    rec = run_ab(args, root / f"ab-{kind}-{i:02d}.json", kind == "ab")
                    r = {**judge(rec["doc"], rec["exit"], args.faults if kind == "ab" else []),
                         "wall_s": rec["wall_s"], "load": rec["load"],
                         "noise_median": rec["doc"]["ab"]["noise_floor"].get("median")}
                    records[kind].append(r)
                    caught = "  ".join(f"{m}x{f:g} {r[f'{m}x{f:g}']['flagged']}/{r[f'{m}x{f:g}']['targets']}"
                                       for m, f in (args.faults if kind == "ab" else []))
                    print(f"[{stamp}] {i:2d} ab {kind}  exit {r['exit']} {r['wall_s']:4.0f} s  load {r['load']:.1f}  "
                          f"noise ±{(r['noise_median'] or 0) * 100:.1f}%  {caught}"
                          + (f"  OTHER: {r['others']}" if r["others"] else ""), flush=True)
                else:
                    wall = run_suite(args, root / f"run-{kind}-{i:02d}", kind == "B")
                    run_walls.append(wall)
                    print(f"[{stamp}] {i:2d} run {kind}  {wall:4.0f} s  load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        if load is not None:
            load.kill()
            load.wait()
    walls = [r["wall_s"] for v in records.values() for r in v]
    summary: dict[str, Any] = {
        "suite": args.suite, "overrides": args.set, "faults": args.faults, "iterations": args.iterations,
        "experiment_wall_s": round(time.perf_counter() - t_start),
        "ab": tally(records["aa"], records["ab"], args.faults),
        "ab_wall_s": [round(w, 1) for w in walls],
        "ab_noise_median": [r["noise_median"] for v in records.values() for r in v],
        "load_average": [r["load"] for v in records.values() for r in v],
        "ab_records": records}
    if not args.no_compare:
        summary["compare"] = compare_protocols(args, root)
        summary["run_wall_s"] = [round(w, 1) for w in run_walls]
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    print_table(summary)
    return 0


def compare_protocols(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    n = args.iterations

    def side(*names: str) -> str:
        return ",".join(str(root / f"run-{x}") for x in names)

    specs = {
        "single": ([(side(f"A-{i:02d}"), side(f"A-{i + 1:02d}")) for i in range(n)],
                   [(side(f"A-{i:02d}"), side(f"B-{i:02d}")) for i in range(n)]),
        "pooled": ([(side(f"A-{i:02d}", f"A-{i + 2:02d}"), side(f"A-{i + 1:02d}", f"A-{i + 3:02d}"))
                    for i in range(n - 2)],
                   [(side(f"A-{i:02d}", f"A-{i + 1:02d}"), side(f"B-{i:02d}", f"B-{i + 1:02d}"))
                    for i in range(n - 1)]),
    }
    out: dict[str, Any] = {}
    for protocol, (aa_pairs, ab_pairs) in specs.items():
        aa, ab = [], []
        for b, c in aa_pairs:
            code, doc = compare(b, c)
            aa.append(judge(doc, code, []))
        for b, c in ab_pairs:
            code, doc = compare(b, c)
            ab.append(judge(doc, code, args.faults))
        out[protocol] = {**tally(aa, ab, args.faults), "aa_records": aa, "ab_records": ab}
    return out


def print_table(s: dict[str, Any]) -> None:
    keys = [f"{m}x{f:g}" for m, f in s["faults"]]
    rows = [("seqbench ab", s["ab"])]
    if "compare" in s:
        rows += [("compare, single runs", s["compare"]["single"]), ("compare, pooled 2+2", s["compare"]["pooled"])]
    print(f"\nsuite {s['suite']} {' '.join(s['overrides'])}; background load: bursty busy loop (10 ms - 2 s spells)")
    print(f"{'gate':<22} {'A/A false alarms':>17} " + " ".join(f"{k + ' caught':>16}" for k in keys)
          + f" {'other cells flagged in A/B':>27}")
    for name, t in rows:
        print(f"{name:<22} {t['aa_false_alarms']:>12}/{t['aa_n']:<4} "
              + " ".join(f"{t[k]['caught']:>11}/{t['ab_n']:<4}" for k in keys)
              + f" {t['ab_other_cells_flagged']:>27}")
    walls = sorted(s["ab_wall_s"])
    if walls:
        print(f"ab wall per run (timing only): median {walls[len(walls) // 2]:.0f} s, max {walls[-1]:.0f} s")
    if s.get("run_wall_s"):
        rw = sorted(s["run_wall_s"])
        print(f"seqbench run wall (timing cells): median {rw[len(rw) // 2]:.0f} s; a single-run compare gate needs "
              "2 runs, the pooled one 4")
    loads = sorted(s["load_average"])
    noise = sorted(x for x in s["ab_noise_median"] if x is not None)
    if loads and noise:
        print(f"1-min load average after the ab runs: median {loads[len(loads) // 2]:.1f}, max {loads[-1]:.1f}; "
              f"ab noise floor (median over cells): median ±{noise[len(noise) // 2] * 100:.1f}%, "
              f"max ±{noise[-1] * 100:.1f}%")
    for k in keys:
        named = sorted({x for r in s["ab_records"]["ab"] for x in r[k]["named"]})
        if named:
            print(f"cells ab named for {k}:", "; ".join(named))
    print(f"experiment wall: {s['experiment_wall_s'] / 60:.0f} min")


if __name__ == "__main__":
    sys.exit(main())
