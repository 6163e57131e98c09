"""Reproduce the published findings of issue 9 with the suite's own runs, and write the table.

Runs bench/suites/findings-<key>.yaml for each finding, one suite after another (the latency
suite last, with one worker: it is timing-sensitive), each with

    python -m seqbench run bench/suites/findings-<key>.yaml --out results/reference/findings/<key> --parallel 2

into a fresh run directory (results.jsonl, env.json, suite.yaml, report/, plus run.json with
the command, its exit code and wall time), then analyses every run with seqbench.bench.findings.core and
writes results/reference/findings.md: per finding the claim and its source, our setup, a
table of our numbers and a verdict (agree / partly / disagree) with its reason.

    python scripts/run_findings.py                       # all nine
    python scripts/run_findings.py formal bai            # only these (findings.md keeps the others' runs)
    python scripts/run_findings.py --analyse-only        # rewrite findings.md from the runs on disk
    python scripts/run_findings.py induction --device cuda --set measures.accuracy.steps=20000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqbench.bench.findings.core import FINDINGS, Analysis, FindingsError, analyse_run, to_markdown

OUT_ROOT = ROOT / "results" / "reference" / "findings"
MARKDOWN = ROOT / "results" / "reference" / "findings.md"
ORDER = ("zoology", "induction", "formal", "bai", "copying", "digits", "recall-modern", "state-tracking", "latency")  # latency last: timing-sensitive
# Worker processes per suite: 2 (the two cores) for training, 1 for latency so that no second
# worker competes with a timed stream.
PARALLEL = {"latency": 1}

# What we concluded from looking at the runs, beyond the automatic criterion: keyed by finding and
# by the verdict it applies to, so a rerun that changes the verdict does not inherit a stale note.
NOTES: dict[str, dict[str, str]] = {
    "zoology": {
        "partly": (
            "Reading the run: attention's half holds from width 32 up (the 32- and 64-wide heads solve every "
            "cell within a few hundred steps); a miss at width 16 is a 16-wide single head that stops improving "
            "early on the most pairs, below Zoology's smallest width (64). The recurrent models learn to recall "
            "one pair and then sit near accuracy 1/kv on more pairs; their accuracy rises with width, the direction "
            "Zoology reports, but with far fewer training examples than Zoology (see setup) no width we ran lets "
            "them solve more than one pair, so the width they need is only bounded from below here. Scale, not a "
            "bug: the same task is solved by attention, and the Mamba here matches mambapy output for output "
            "(tests/test_models_mamba.py)."),
    },
    "induction": {
        "agree": (
            "Budget matters for the long-length columns: an earlier 1500-step pass of this suite on the same "
            "machine had Mamba at 0.76 at 16x and the RoPE Transformer at 0.88 at the training length; Mamba "
            "solves the training length within a few hundred steps and its extrapolation keeps sharpening "
            "afterwards. The learned-position table has untrained rows past the training length, so that model's "
            "collapse is by construction; RoPE's collapse is the paper's point."),
    },
    "formal": {
        "agree": (
            "Accuracy of Mamba or the Transformer above chance at the training length is fitting short strings: "
            "on every longer string they are at chance, while the LSTM is exact, as both papers report."),
    },
    "copying": {
        "partly": (
            "Reading the run: (a) reproduces, (b) does not: the RoPE Transformer falls to chance as soon as the "
            "string is longer than trained, while LSTM and Mamba keep part of their (lower) accuracy. Likely "
            "the protocol, not a bug: our copy and reverse tasks feed blanks at the output positions (no "
            "teacher forcing), so a Transformer must find each source symbol by position, and RoPE attention "
            "does not extrapolate to relative distances it never saw; Jelassi et al.'s Transformers copy "
            "through an n-gram lookup on the fed-back prefix, which needs no positions, and train on all "
            "string lengths up to the maximum (we train at one length). The NoPE Transformer did not learn "
            "either task within the budget. Testing (b) faithfully needs a language-model copy task (the "
            "copied prefix fed back), which this suite's tasks do not offer."),
    },
    "bai": {
        "agree": (
            "At the paper's adding length (T=600) the pattern and even the values match Table 1: the GRU solves "
            "it, the LSTM and vanilla RNN stay at the 0.167 of predicting 1. At the longest copy delay we can "
            "afford (500 of the paper's 1000) the GRU sits only slightly above chance, mirroring Bai's GRU loss "
            "just under the memoryless baseline; both count as not leaving it. Shorter lengths change the "
            "picture (the LSTM solves adding at T=100; the GRU recalls part of the string at delay 50), so "
            "the table's outcome is a statement about length, as Bai's single-length table is."),
    },
    "digits": {
        "agree": (
            "Reading the run: regularisation is what moved the LSTM past 0.9. Without it (a 1-layer LSTM, no "
            "dropout, weight decay 0.01, tokens) the training loss reaches 0 by step 1000 and the test score is "
            "0.81 (validation 0.91); dropout 0.3 and weight decay 0.1-0.2 on a 2-layer LSTM gave 0.89-0.91 "
            "over two seeds, and the block MLP (2 x d_model) 0.91. The gap between validation (0.94-0.99) and "
            "test comes from the split: both are the last images of each class in file order, the test ones "
            "later, so test digits come from writers the training set saw least. One seed and 364 test "
            "images: the interval is about ±0.03, so the order LSTM > GRU > Mamba > Transformer is not "
            "separated at this size (the LSTM's and the GRU's intervals overlap)."),
    },
    "latency": {
        "agree": (
            "Every step of every model reads its whole state: the Transformer's KV cache grows by 2 x d_model "
            "floats per layer per token (state columns), the recurrent states and Mamba's do not. On a 1-thread "
            "CPU at batch 1 the growth of the attention step is modest because fixed per-step overheads "
            "dominate at short contexts; Mamba runs the pure-PyTorch reference step here (the paper's numbers "
            "use fused CUDA kernels). No GPU was available to this run; the suite header gives the GPU command."),
    },
}


def run_suite(key: str, out_root: Path, parallel: int, device: str | None, overrides: list[str]) -> dict:
    """Run one findings suite into a fresh out_root/key; returns the run.json record."""
    run_dir = out_root / key
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "bench", "run", str(ROOT / "bench" / "suites" / f"findings-{key}.yaml"),
           "--out", str(run_dir), "--parallel", str(parallel)]
    if device:
        cmd += ["--device", device]
    for item in overrides:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, check=False)
    record = {"command": " ".join(["python"] + cmd[1:]).replace(str(ROOT) + "/", ""),
              "exit_code": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1)}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _run_record(run_dir: Path) -> dict:
    p = run_dir / "run.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _env(run_dir: Path) -> dict:
    p = run_dir / "env.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _section(i: int, key: str, run_dir: Path) -> tuple[str, str]:
    """(markdown section, verdict) for one finding."""
    f = FINDINGS[key]
    head = f"## {i}. {f.title}\n\n**Finding.** {f.claim}\n\n**Source.** {f.source}\n"
    try:
        a: Analysis = analyse_run(key, run_dir)
    except FindingsError as exc:
        return head + f"\n**Not run.** {exc}\n", "not run"
    rec = _run_record(run_dir)
    wall = f"{rec['wall_s'] / 60:.1f} min wall" if "wall_s" in rec else "wall time not recorded"
    lines = [head, f"**Our setup** ({wall}; `{rec.get('command', 'python -m seqbench run ...')}`). {a.setup}\n",
             f"**Protocol differences.** {f.protocol}\n", to_markdown(a.table) + "\n",
             f"**Verdict: {a.verdict}.** {a.reason}"]
    note = NOTES.get(key, {}).get(a.verdict)
    if note:
        lines[-1] += f" {note}"
    lines[-1] += "\n"
    if a.failed:
        lines.append("**Cells that did not complete:** " + "; ".join(a.failed) + "\n")
    lines.append(f"Run directory: `{run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir}` "
                 "(results.jsonl, env.json, suite.yaml, report/).\n")
    return "\n".join(lines), a.verdict


def write_markdown(out_root: Path, path: Path) -> str:
    sections, summary = [], []
    env = next((_env(out_root / k) for k in ORDER if _env(out_root / k)), {})
    for i, key in enumerate(ORDER, 1):
        run_dir = out_root / key
        text, verdict = _section(i, key, run_dir)
        sections.append(text)
        rec = _run_record(run_dir)
        wall = f"{rec['wall_s'] / 60:.1f}" if "wall_s" in rec else "—"
        summary.append({"#": i, "finding": FINDINGS[key].title, "suite": f"findings-{key}", "verdict": verdict,
                        "wall (min)": wall})
    machine = ""
    if env:
        machine = (f"{env.get('device_name')} ({env.get('cpu_count')} cores), torch {env.get('torch_version')}, "
                   f"git {str(env.get('git_sha'))[:10]}{' (uncommitted changes)' if env.get('git_dirty') else ''}; "
                   "other jobs shared the machine during the runs")
    doc = [
        "# Published findings, reproduced with seqbench's own runs\n",
        ("Each finding of issue 9 has a suite (bench/suites/findings-*.yaml, whose header gives the `--set` "
         "overrides for the paper's scale on a GPU), a run under results/reference/findings/<name>/, and the "
         "analysis in bench/findings/ that turns the run into the table and the verdict below. The verdict "
         "follows a criterion written in that analysis (quoted with each verdict), so a rerun is judged the "
         "same way. Regenerate with `python scripts/run_findings.py` (all seven, ~35-50 min on the 2-core CPU) "
         "or `python scripts/run_findings.py --analyse-only`.\n"),
        f"Machine: {machine or 'see each run env.json'}.\n",
        to_markdown(pd.DataFrame(summary)) + "\n",
    ]
    text = "\n".join(doc + sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("findings", nargs="*", metavar="FINDING", help=f"which to run (default: all): {', '.join(ORDER)}")
    p.add_argument("--analyse-only", action="store_true", help="only rewrite findings.md from the runs on disk")
    p.add_argument("--parallel", type=int, default=None,
                   help="worker processes per suite (default 2; 1 for the latency suite)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override the suites' device")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override passed to every suite run")
    p.add_argument("--out-root", type=Path, default=OUT_ROOT, help="run directories go to OUT_ROOT/<finding>")
    p.add_argument("--markdown", type=Path, default=MARKDOWN, help="where to write the findings table")
    args = p.parse_args(argv)
    unknown = [k for k in args.findings if k not in ORDER]
    if unknown:
        p.error(f"unknown finding(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    chosen = [k for k in ORDER if k in args.findings] if args.findings else list(ORDER)
    failed = []
    if not args.analyse_only:
        for key in chosen:
            print(f"== findings-{key}", file=sys.stderr, flush=True)
            parallel = args.parallel if args.parallel is not None else PARALLEL.get(key, 2)
            rec = run_suite(key, args.out_root, parallel, args.device, args.set)
            print(f"== findings-{key}: exit {rec['exit_code']}, {rec['wall_s']:.0f} s", file=sys.stderr, flush=True)
            if rec["exit_code"] != 0:
                failed.append(key)
    write_markdown(args.out_root, args.markdown)
    print(f"wrote {args.markdown}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
