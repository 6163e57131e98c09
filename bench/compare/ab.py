"""Interleaved A/B timing of two checkouts with paired statistics: a CI gate for a shared runner.

    seqbench ab BASE HEAD [SUITE] [--set KEY=VALUE]… [--format table|markdown|json] [--strict]
                [--fail METRIC:±N%]… [--timing-only] [--block-ms 5] [--rounds 12:48] [--seed N]
                [--work-dir DIR] [--cache-dir DIR] [--pythonpath DIR]

BASE and HEAD are each a checkout (a directory with pyproject.toml) or a git ref of the
repository in the current directory (checked out with `git worktree add` into a temporary
folder, removed afterwards). A checkout other than the one this seqbench runs from is installed
into its own virtual environment (`python -m venv --system-site-packages` + `pip install
--no-deps -e`, cached under --cache-dir), so both sides use the same torch and dependencies
and each side imports its own models and workloads, whichever layout it has (the seqbench.*
namespace or the older top-level packages). SUITE (default smoke) is read by this (HEAD's)
seqbench and defines the cells of both sides.

Your own models: when BASE and HEAD are checkouts of a project that is not seqbench (its
pyproject.toml names another project), both sides run this seqbench, each with its checkout's
--pythonpath folder (default: the root) first on sys.path, and the suite names the project's
models by import path (`family: "my_pkg.mixers:MyMixer"`). A worker refuses a model whose
package it imported from outside its own checkout (e.g. an editable install of the other one).

Timing. Two long-lived worker processes, one per side (bench/compare/ab_worker.py run with the
side's Python), build each timing cell's model — a throughput mode (inference, training) or a
latency stream of per-token step() calls — and warm it up. The coordinator then alternates
short timed blocks between them (each about --block-ms and at least 3 calls, the same number
of calls on both sides) in rounds of four, ABBA or BAAB at random, so both sides run under the
same machine load within milliseconds of each other; a load that drifts linearly over a round
cancels. Both workers are pinned to the same CPUs (the last `threads` CPUs, or --cpus), so they
share whatever else runs there. On CPU a block reports the median of its calls, each timed on
its own (a call stretched by a preemption is an outlier the median ignores). Each round gives
one paired ratio, HEAD over BASE (the geometric means of each side's two blocks). Per cell:

    ratio      exp(median log-ratio) over the rounds
    interval   95% percentile-bootstrap interval of that median
    p          Wilcoxon signed-rank test of the log-ratios, Holm-corrected across the cells
    verdict    seqbench.bench.stats.timing_verdict(paired=True): regression when the ratio is
               past the threshold (10% CPU, 5% CUDA, or --fail) AND p (Holm) < 0.05 AND the
               interval lies wholly on the slow side of 1 (compare, on unpaired runs, needs
               the whole interval past the threshold); pass when the interval lies inside the
               threshold; otherwise inconclusive. A cell takes --rounds MIN rounds, then 8 more
               at a time, up to MAX, while its verdict is still open.

The noise floor: in the same run, each side's own blocks are split into halves — its first
and its second block of every round, the same code twice — and the two sides' A/A differences
are combined per round with the weights that cancel a linear drift (aa_contrasts), then judged
like the A/B log-ratios: the larger distance from 1 of that A/A interval is how large a change
identical code showed under this run's load. It is in each timing's note and summarised above
the table (median, p90 and max over the timings).

No quiet guard (seqbench.bench.measures.timing.QuietGuard, which retakes a sample when a probe
says the machine is busy): inside ab both sides are timed alternately under the same load,
which the paired ratio cancels, and a preemption inside a block is an outlier its median
ignores, so nothing is retaken and a busy machine costs precision (a wider noise floor), not
false verdicts.

Memory and accuracy: the suite's memory and accuracy cells run once per side through the side's
own `seqbench run` (HEAD's suite file for both), judged exactly as `seqbench compare` judges them
(a cell that fails only on HEAD fails). --timing-only skips them.

The suite's test-only `faults:` act on HEAD only (`slowdown` in the timed blocks; the others in
HEAD's memory and accuracy run), which is how scripts/ab_gate_check.py proves the gate catches
a slowdown.

Output: compare's verdict words, tables (terminal, Markdown, JSON) and exit codes — 0 pass,
1 a regression or a failed cell (or, with --strict, an inconclusive one), 2 bad input; the
verdict line comes first and again last.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import queue
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from seqbench.bench import stats
from seqbench.bench.compare import render
from seqbench.bench.compare.judge import (
    ACCURACY_DROP,
    SEVERITY,
    TIMING_THRESHOLD,
    CompareResult,
    Comparison,
    FailRule,
    cell_label,
    compare,
    parse_fail,
)
from seqbench.bench.compare.load import load_side
from seqbench.bench.results.schema import METRICS
from seqbench.errors import CompareInputError

WORKER = Path(__file__).resolve().with_name("ab_worker.py")
TIMED_MEASURES = ("throughput", "latency")
SIDE_RUN_MEASURES = ("memory", "accuracy")  # judged from each side's own `seqbench run`
SIDE_RUN_METRICS = ("peak_bytes", "accuracy")
MAX_INNER = 10_000  # calls per block at most
MIN_CALLS = 3  # calls per throughput block at least: the block's median needs a few (a stream has seq_len steps)
START_TIMEOUT_S = 300.0  # a worker's start: import torch and the side's code
ROUND_STEP = 8  # rounds added at a time while a verdict is open
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ABSettings:
    """How `seqbench ab` times and judges (the CLI's options)."""

    block_s: float = 0.005  # target duration of one timed block (calls per block: the faster side's)
    min_rounds: int = 12  # ABBA rounds per timing before its first look
    max_rounds: int = 48  # at most this many (more only while the verdict is open)
    seed: int | None = None  # the ABBA / BAAB order (None: random, reported)
    timing_only: bool = False  # skip the memory and accuracy side runs
    strict: bool = False  # inconclusive fails too
    accuracy_drop: float = ACCURACY_DROP
    fail: tuple[FailRule, ...] = ()
    allow_env_change: bool = False  # judge timings when the sides' torch versions differ
    cpus: tuple[int, ...] | None = None  # the CPUs both workers share (None: the last `threads` CPUs; (): no pinning)


# --- sides: a checkout or a git ref, and the Python that runs it -------------------------------


@dataclass
class SideEnv:
    """One side: where its code is and which Python imports it."""

    name: str  # "base" | "head"
    spec: str  # as given on the command line
    root: Path
    python: str
    sha: str | None = None
    dirty: bool | None = None
    project: Path | None = None  # a checkout of the user's own project: its code is imported from here

    def env(self) -> dict[str, str]:
        """The environment of this side's processes: a project's folder first on PYTHONPATH."""
        env = dict(os.environ)
        if self.project is not None:
            env["PYTHONPATH"] = os.pathsep.join(x for x in (str(self.project), env.get("PYTHONPATH")) if x)
        return env

    @property
    def label(self) -> str:
        rev = f"{self.sha[:10]}{'+dirty' if self.dirty else ''}" if self.sha else "no git"
        return f"{self.spec} ({rev})"

    def cli_entry(self) -> tuple[str, str]:
        """(module, function) of the side's `seqbench` console script, from its pyproject.toml."""
        if self.project is not None:
            return ("seqbench.bench.cli", "main")
        text = (self.root / "pyproject.toml").read_text(encoding="utf-8")
        m = re.search(r'^\s*seqbench\s*=\s*"([\w.]+):(\w+)"', text, re.MULTILINE)
        return (m.group(1), m.group(2)) if m else ("seqbench.bench.cli", "main")


def _git(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def _checkout_root(path: Path) -> Path | None:
    for p in (path, *path.parents):
        if (p / "pyproject.toml").is_file():
            return p
    return None


def is_seqbench_checkout(root: Path) -> bool:
    """Whether the checkout at `root` is seqbench itself (its pyproject.toml names the project
    seqbench), not a project of the user's own models."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8", errors="replace")
    return re.search(r'^\s*name\s*=\s*["\']seqbench["\']', text, re.MULTILINE) is not None


def _running_root() -> Path | None:
    from seqbench.bench.run.env import source_root

    root = source_root()
    return root.resolve() if root is not None else None


def ensure_venv(root: Path, venv: Path) -> str:
    """The Python of a venv that sees this interpreter's packages (torch included) and holds
    `root` installed editable; reused while root, its pyproject.toml and this Python are unchanged."""
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    stamp = venv / "seqbench-ab.json"
    want = {"root": str(root), "python": sys.executable,
            "pyproject": hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()}
    if py.exists() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return str(py)
    shutil.rmtree(venv, ignore_errors=True)
    made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise CompareInputError(f"could not create a venv at {venv}: {made.stderr.strip()[-500:]}")
    pip = [str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--no-input", "--disable-pip-version-check",
           "-e", str(root)]
    done = subprocess.run(pip + ["--no-build-isolation"], capture_output=True, text=True, check=False)
    if done.returncode != 0:  # no setuptools here: let pip fetch the build backend
        done = subprocess.run(pip, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CompareInputError(f"could not install {root} into {venv} (pip install --no-deps -e): "
                                f"{done.stderr.strip()[-800:]}")
    stamp.write_text(json.dumps(want))
    return str(py)


def locate_side(name: str, spec: str, work: Path, cache: Path, stack: ExitStack) -> tuple[Path, Path]:
    """(checkout root, venv folder) of a checkout directory, or of a git ref checked out into
    `work` (the worktree is removed when `stack` closes)."""
    path = Path(spec)
    if path.is_dir():
        root = _checkout_root(path.resolve())
        if root is None:
            raise CompareInputError(f"{name.upper()} {spec!r}: no pyproject.toml in it or above: not a checkout")
        return root, cache / f"venv-{hashlib.sha256(str(root).encode()).hexdigest()[:16]}"
    rev = _git(["rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"])
    if rev.returncode != 0:
        raise CompareInputError(f"{name.upper()} {spec!r}: neither a checkout directory nor a git ref of the "
                                f"repository at {Path.cwd()}")
    sha = rev.stdout.strip()
    root = work / f"{name}-{sha[:12]}"
    added = _git(["worktree", "add", "--detach", str(root), sha])
    if added.returncode != 0:
        raise CompareInputError(f"git worktree add {root} {sha[:12]}: {added.stderr.strip()}")
    stack.callback(lambda: _git(["worktree", "remove", "--force", str(root)]))
    if not (root / "pyproject.toml").is_file():
        raise CompareInputError(f"{name.upper()} {spec!r} ({sha[:12]}) has no pyproject.toml: not a seqbench commit")
    return root, work / f"{name}-venv"


def resolve_sides(specs: dict[str, str], work: Path, cache: Path, stack: ExitStack,
                  pythonpath: str = ".") -> dict[str, SideEnv]:
    """Each side's checkout and the Python that imports it: this interpreter for the checkout this
    seqbench runs from, else its venv (the two installs run at once). A checkout of a project
    that is not seqbench runs this interpreter's seqbench with the project's `pythonpath`
    folder first on sys.path."""
    from concurrent.futures import ThreadPoolExecutor

    from seqbench.bench.run.env import git_state

    located = {name: locate_side(name, spec, work, cache, stack) for name, spec in specs.items()}
    projects = {}
    for name, (root, _) in located.items():
        if not is_seqbench_checkout(root):
            folder = (root / pythonpath).resolve()
            if not folder.is_dir():
                raise CompareInputError(f"{name.upper()} {specs[name]!r} is a project, not seqbench, and has no "
                                        f"folder {pythonpath!r} for --pythonpath (the folder that holds its model "
                                        "package, relative to the checkout)")
            projects[name] = folder
    kinds = {name in projects for name in located}
    if len(kinds) > 1:
        raise CompareInputError("BASE and HEAD must both be seqbench checkouts or both checkouts of your project; "
                                f"got {', '.join(f'{n} {specs[n]!r}' for n in located)}")
    running = _running_root()
    venvs = {venv: root for name, (root, venv) in located.items() if root != running and name not in projects}
    with ThreadPoolExecutor(max_workers=2) as pool:
        pythons = dict(zip(venvs, pool.map(lambda v: ensure_venv(venvs[v], v), venvs)))
    sides = {}
    for name, (root, venv) in located.items():
        sha, dirty = git_state(root)
        python = sys.executable if root == running or name in projects else pythons[venv]
        sides[name] = SideEnv(name, specs[name], root, python, sha, dirty, projects.get(name))
    return sides


# --- workers -------------------------------------------------------------------------------------


class WorkerLost(RuntimeError):
    """A worker died or did not answer in time; it is restarted for the next cell."""


class Worker:
    """One side's long-lived worker process (bench/compare/ab_worker.py) and its pipes."""

    def __init__(self, side: SideEnv, log_path: Path) -> None:
        self.side = side
        self.log_path = log_path
        self.hello: dict[str, Any] = {}
        self._spawn()

    def _spawn(self) -> None:
        self.log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 — closed in close()
        project = ["--project", str(self.side.project)] if self.side.project else []
        self.proc = subprocess.Popen([self.side.python, "-u", str(WORKER), str(self.side.root), *project],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     bufsize=1, cwd=self.side.root, env=self.side.env())
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()

    @staticmethod
    def _read(stream: TextIO, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    def _tail(self) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-3:])

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise WorkerLost(f"{self.side.name} worker gave no answer within {timeout:g} s") from None
        if line is None:
            code = self.proc.wait()
            raise WorkerLost(f"{self.side.name} worker exited with code {code}: {self._tail()}")
        return json.loads(line)

    def start(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Wait for the worker's hello; CompareInputError when the side does not import its own code."""
        try:
            reply = self.receive(timeout)
        except WorkerLost as exc:
            raise CompareInputError(f"{self.side.name.upper()} {self.side.spec!r}: {exc}") from None
        if "error" in reply:
            raise CompareInputError(f"{self.side.name.upper()} {self.side.spec!r}: {reply['error']}")
        self.hello = reply["hello"]
        return self.hello

    def request(self, msg: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerLost(f"{self.side.name} worker is gone: {self._tail()}") from None
        return self.receive(timeout)

    def restart(self) -> None:
        self.close()
        self._spawn()
        self.start()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def worker_cpus(threads: int | None, given: tuple[int, ...] | None) -> list[int]:
    """The CPUs both workers are pinned to: `given`, else the last `threads` CPUs this process may
    use. [] (no pinning) where the platform cannot pin or `threads` covers every CPU.

    Both sides on the same CPUs is what makes their loads equal: left to the scheduler, each
    worker wakes on the CPU it last ran on, and on a 2-vCPU machine the two CPUs differ by
    whatever else runs on them (an A/A run measured one worker 10% slower for a whole cell)."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    allowed = sorted(os.sched_getaffinity(0))
    if given is not None:
        bad = [c for c in given if c not in allowed]
        if bad:
            raise CompareInputError(f"--cpus {','.join(map(str, given))}: CPU {bad[0]} is not available here "
                                    f"(available: {','.join(map(str, allowed))})")
        return list(given)
    k = int(threads) if threads else len(allowed)
    return allowed[-k:] if k < len(allowed) else []


# --- timing cells ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One timing of a cell: a throughput mode or the latency stream."""

    cell: Any  # seqbench.bench.run.matrix.Cell
    mode: str  # inference | training | stream
    metric: str  # tokens_per_s | latency_p50_ms
    row: dict[str, Any]  # the label fields (cell_label)
    setup: dict[str, Any]  # the worker's setup message
    per_call: int  # tokens per call (throughput); 1 for a latency step
    slowdown: float  # test-only fault, HEAD only

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "tokens_per_s"

    def value(self, seconds: float) -> float:
        """A block's metric from its median seconds per call: tokens/s, or ms per step()."""
        if self.metric == "tokens_per_s":
            return self.per_call / seconds
        return seconds * 1e3


def timing_units(suite: Any, cells: Iterable[Any], cpus: list[int] | None = None) -> list[Unit]:
    """The throughput modes and latency streams of the suite's cells, in cell order; both sides'
    workers pin themselves to `cpus` at their first setup."""
    from seqbench.bench.measures import MEASURES
    from seqbench.bench.run import match
    from seqbench.bench.run.matrix import faults_for

    units = []
    for cell in cells:
        if cell.measure not in TIMED_MEASURES:
            continue
        s = MEASURES[cell.measure].make_settings(cell.settings)
        slowdown = float(faults_for(cell, suite.faults).get("slowdown", 1.0))
        config = dict(cell.model_config)
        target = config.pop(match.MATCH_KEY, None)  # a `match` width is fitted once, here: both sides get it
        if target:
            try:
                config, _ = match.apply(cell.family, config, target, cell.seq_len or 1024)
            except match.MatchError:
                continue  # `seqbench run` skips this cell too
        base = {"op": "setup", "cell": {"family": cell.family, "model_config": config,
                                        "device": cell.device, "dtype": cell.dtype, "seed": cell.seed,
                                        "batch_size": cell.batch_size, "seq_len": cell.seq_len},
                "threads": suite.threads, "cpus": cpus or None, "warmup": s.warmup}
        row = {"cell_id": cell.cell_id, "measure": cell.measure, "model": cell.model, "seq_len": cell.seq_len,
               "dtype": cell.dtype}
        if cell.measure == "throughput":
            for mode in s.modes:
                units.append(Unit(cell, mode, "tokens_per_s", {**row, "batch_size": cell.batch_size, "mode": mode},
                                  {**base, "mode": mode, "lr": s.lr}, cell.batch_size * cell.seq_len, slowdown))
        else:
            units.append(Unit(cell, "stream", "latency_p50_ms", {**row, "batch_size": s.batch_size},
                              {**base, "mode": "stream", "stream_batch_size": s.batch_size}, 1, slowdown))
    return units


@dataclass
class UnitResult:
    unit: Unit
    calls: int = 0  # calls per block
    # per ABBA round: (BASE's two blocks, HEAD's two blocks) in time order, median seconds per call each
    rounds: list[tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=list)
    orders: str = ""  # "ABBA" / "BAAB" per round, concatenated
    skipped: dict[str, str] = field(default_factory=dict)  # side -> reason
    errors: dict[str, str] = field(default_factory=dict)  # side -> message
    test: stats.RatioTest | None = None  # HEAD / BASE in the metric's terms
    noise: stats.RatioTest | None = None  # A/A (aa_contrasts)
    wall_s: float = 0.0

    def paired(self) -> tuple[list[float], list[float]]:
        """Per round, the geometric mean of each side's two block metrics: (BASE, HEAD)."""
        u = self.unit
        base = [math.sqrt(u.value(a0) * u.value(a1)) for (a0, a1), _ in self.rounds]
        head = [math.sqrt(u.value(b0) * u.value(b1)) for _, (b0, b1) in self.rounds]
        return base, head

    @property
    def noise_floor(self) -> float | None:
        """The largest change inside the A/A interval (0.03: ±3%)."""
        if self.noise is None:
            return None
        return max(abs(self.noise.ci_high - 1.0), abs(1.0 - self.noise.ci_low))


def aa_contrasts(rounds: list[tuple[tuple[float, float], tuple[float, float]]], orders: str) -> list[float]:
    """Per round, an A-vs-A contrast: each side's first block against its second (same code),
    the two combined with the weights that cancel a linear drift over the round.

    A round's four blocks in time order are o1 i1 i2 o2 (outer side o, inner side i: ABBA has
    A outside). (+1, -3, +3, -1) . log(o1, i1, i2, o2) = (log o1 - log o2) - 3 (log i1 - log i2)
    is orthogonal to the A/B contrast, to the round's mean and to a linear drift, so neither
    the code difference nor a steady change of load moves it; divided by sqrt(20) it has the
    variance of the A/B log-ratio under independent block noise. Its spread is the run's noise
    floor: what identical code showed under this run's load."""
    out = []
    for j, (a, b) in enumerate(rounds):
        outer, inner = (a, b) if orders[4 * j] == "A" else (b, a)
        c = (math.log(outer[0]) - math.log(outer[1])) - 3.0 * (math.log(inner[0]) - math.log(inner[1]))
        out.append(c / math.sqrt(20.0))
    return out


def aa_test(contrasts: list[float]) -> stats.RatioTest:
    """The A/A 'ratio' exp(median contrast) with its bootstrap interval and signed-rank p."""
    lo, hi = stats.bootstrap_median_ci(contrasts)
    n = len(contrasts)
    return stats.RatioTest(math.exp(float(np.median(contrasts))), math.exp(lo), math.exp(hi),
                           stats.signed_rank_p(contrasts), n, n)


def _limit(unit: Unit, settings: ABSettings) -> float:
    rule = next((r for r in settings.fail if r.metric == unit.metric), None)
    if rule is not None:
        return rule.amount
    return TIMING_THRESHOLD["cuda" if str(unit.cell.device).startswith("cuda") else "cpu"]


def _settled(test: stats.RatioTest, m: int, threshold: float, higher: bool) -> bool:
    """The verdict is decided: Bonferroni's m * p is never below Holm's adjusted p, so a verdict
    reached with it stands after Holm."""
    return stats.timing_verdict(test, min(1.0, test.p_value * m), threshold, higher, paired=True) != "inconclusive"


def measure_unit(unit: Unit, workers: dict[str, Worker], settings: ABSettings, rng: random.Random, m: int,
                 timeout: float) -> UnitResult:
    """Set up both sides, then ABBA rounds until the verdict settles or max_rounds."""
    t0 = time.perf_counter()
    res = UnitResult(unit)
    once: dict[str, float] = {}
    for name, worker in workers.items():
        msg = dict(unit.setup, slowdown=unit.slowdown if name == "head" else 1.0)
        reply = _ask(worker, msg, timeout, res, name)
        if reply is None:
            continue
        if "skip" in reply:
            res.skipped[name] = reply["skip"]
        else:
            once[name] = float(reply["once_s"])
    if len(once) < 2:
        res.wall_s = time.perf_counter() - t0
        return res
    least = 1 if unit.mode == "stream" else MIN_CALLS
    res.calls = max(least, min(MAX_INNER, math.ceil(settings.block_s / max(min(once.values()), 1e-9))))
    side_of = {"A": "base", "B": "head"}
    threshold = _limit(unit, settings)
    last = ""  # the side that ran the previous block: its caches are still warm
    while len(res.rounds) < settings.max_rounds:
        todo = settings.min_rounds if not res.rounds else ROUND_STEP
        for _ in range(min(todo, settings.max_rounds - len(res.rounds))):
            order = rng.choice(("ABBA", "BAAB"))
            times: dict[str, list[float]] = {"A": [], "B": []}
            for letter in order:
                msg = {"op": "block", "n": res.calls, "warm": letter == last}
                last = letter
                reply = _ask(workers[side_of[letter]], msg, timeout, res, side_of[letter])
                if reply is None:
                    res.wall_s = time.perf_counter() - t0
                    return res
                times[letter].append(float(reply["s"]))
            res.rounds.append(((times["A"][0], times["A"][1]), (times["B"][0], times["B"][1])))
            res.orders += order
        res.test = stats.paired_ratio_test(*res.paired())
        if _settled(res.test, m, threshold, unit.higher_is_better):
            break
    res.noise = aa_test(aa_contrasts(res.rounds, res.orders))
    res.wall_s = time.perf_counter() - t0
    return res


def _ask(worker: Worker, msg: dict[str, Any], timeout: float, res: UnitResult, name: str) -> dict[str, Any] | None:
    """The worker's reply, or None after recording its error (a lost worker is restarted)."""
    try:
        reply = worker.request(msg, timeout)
    except WorkerLost as exc:
        res.errors[name] = str(exc)
        worker.restart()
        return None
    if "error" in reply:
        res.errors[name] = reply["error"]
        return None
    return reply


# --- judging -------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def judge_units(results: list[UnitResult], settings: ABSettings, comparable: bool
                ) -> tuple[list[Comparison], list[dict[str, Any]], list[dict[str, Any]]]:
    """Comparisons of the timed cells (Holm across them), and the cells timed on one side only."""
    comps: list[Comparison] = []
    only_base: list[dict[str, Any]] = []
    only_head: list[dict[str, Any]] = []
    tested: list[tuple[Comparison, UnitResult, float]] = []
    for res in results:
        u = res.unit
        label = cell_label(u.row)
        extras = {"mode": u.mode} if u.metric == "tokens_per_s" else {}
        listing = {"cell_id": u.cell.cell_id, "label": label, "metric": u.metric, "extras": extras, "value": None}
        higher = u.higher_is_better
        threshold = _limit(u, settings)
        comp = Comparison(u.cell.cell_id, label, u.metric, extras, "timing", None, None, None,
                          threshold=f"{'-' if higher else '+'}{threshold * 100:g}%",
                          unit=METRICS[u.metric][0], higher_is_better=higher)
        if res.errors:
            if "head" in res.errors and "base" in res.errors:
                comp.verdict, comp.note = "inconclusive", f"failed on both sides: {res.errors['head']}"
            elif "head" in res.errors:
                comp.verdict, comp.note = "failed", f"head: {res.errors['head']}"
            else:
                only_head.append(listing)  # as compare lists a cell that failed on the baseline only
                continue
            comps.append(comp)
            continue
        if res.skipped:
            if len(res.skipped) == 1:
                (only_head if "base" in res.skipped else only_base).append(listing)
            continue
        base, head = res.paired()
        comp.baseline, comp.current = stats.quantile(base), stats.quantile(head)
        test = res.test
        assert test is not None
        comp.change, comp.ci_low, comp.ci_high = test.ratio - 1.0, test.ci_low - 1.0, test.ci_high - 1.0
        comp.p_value = test.p_value
        floor = res.noise_floor
        comp.note = (f"{len(res.rounds)} ABBA rounds x {res.calls} calls"
                     + (f"; A/A noise ±{_pct(floor)}" if floor is not None else ""))
        if not comparable:
            comp.verdict = "not comparable"
            comp.note = "torch versions of the sides differ (use --allow-env-change to judge anyway)"
        else:
            tested.append((comp, res, threshold))
        comps.append(comp)
    adjusted = stats.holm([r.test.p_value for _, r, _ in tested]) if tested else []
    for (comp, res, threshold), p_adj in zip(tested, adjusted):
        assert res.test is not None
        comp.p_adjusted = p_adj
        comp.verdict = stats.timing_verdict(res.test, p_adj, threshold, bool(comp.higher_is_better), paired=True)
        if comp.verdict == "inconclusive":
            why = stats.why_inconclusive(res.test, threshold, bool(comp.higher_is_better))
            comp.note = f"too noisy to tell: {why}; {comp.note}"
    return comps, only_base, only_head


def noise_summary(results: list[UnitResult], settings: ABSettings) -> dict[str, Any]:
    """The run's A/A noise floor over its timings: median, 90th percentile, max (and where)."""
    floors = [(r.noise_floor, r) for r in results if r.noise_floor is not None]
    if not floors:
        return {"n": 0}
    values = np.array([f for f, _ in floors])
    worst, worst_res = max(floors, key=lambda x: x[0])
    past = sum(f > _limit(r.unit, settings) for f, r in floors)
    return {"n": len(floors), "median": float(np.median(values)), "p90": float(np.quantile(values, 0.9)),
            "max": float(worst), "max_cell": f"{cell_label(worst_res.unit.row)} {worst_res.unit.metric}",
            "past_threshold": int(past)}


def noise_line(noise: dict[str, Any]) -> str:
    if not noise.get("n"):
        return "noise floor: not measured (no timing with two or more rounds)"
    text = (f"noise floor (A/A: each side's first vs second block of every round, in this run): "
            f"median ±{_pct(noise['median'])}, "
            f"p90 ±{_pct(noise['p90'])}, max ±{_pct(noise['max'])} ({noise['max_cell']}) over {noise['n']} timings")
    if noise["past_threshold"]:
        text += f"; {noise['past_threshold']} wider than their threshold"
    return text


# --- memory and accuracy: each side's own `seqbench run` -------------------------------------------


def side_run_overrides(suite: Any, keep: list[str]) -> list[str]:
    """--set overrides that leave only the `keep` measures' cells of the suite."""
    exclude = list(suite.exclude) + [{"measure": m} for m in suite.measures if m not in keep]
    include = [e for e in suite.include if e.get("measure") in keep]
    return [f"exclude={json.dumps(exclude)}", f"include={json.dumps(include)}"]


def side_runs(suite: Any, suite_path: Path, overrides: list[str], sides: dict[str, SideEnv], work: Path,
              settings: ABSettings, progress: Progress
              ) -> tuple[list[Comparison], list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Run the suite's memory and accuracy cells once per side (both at once) and judge them
    with compare. Returns (comparisons, only in base, only in head, warnings)."""
    keep = [m for m in suite.measures if m in SIDE_RUN_MEASURES]
    if not keep:
        return [], [], [], ["the suite has no memory or accuracy cells: only timings were compared"]
    sets = list(overrides) + side_run_overrides(suite, keep)
    procs = {}
    for name, side in sides.items():
        out = work / f"run-{name}"
        shutil.rmtree(out, ignore_errors=True)
        module, fn = side.cli_entry()
        code = f"import sys; del sys.path[0]; from {module} import {fn}; sys.exit({fn}(sys.argv[1:]))"
        cmd = [side.python, "-c", code, "run", str(suite_path), "--out", str(out), "--parallel", "1"]  # 2 runs at once
        for s in sets + (["faults=[]"] if name == "base" else []):  # faults act on HEAD only
            cmd += ["--set", s]
        log = open(work / f"run-{name}.log", "w", encoding="utf-8")  # noqa: SIM115 — closed below
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=side.root, env=side.env()),
                       log, out)
    progress(f"memory and accuracy: {', '.join(keep)} cells of the suite, one `seqbench run` per side")
    warnings, outs = [], {}
    for name, (proc, log, out) in procs.items():
        code = proc.wait()
        log.close()
        if code in (0, 1) and (out / "results.jsonl").is_file():
            outs[name] = out
        else:
            tail = " | ".join((work / f"run-{name}.log").read_text(errors="replace").strip().splitlines()[-3:])
            warnings.append(f"memory and accuracy not compared: {name}'s seqbench run exited {code}: {tail}")
    if len(outs) < 2:
        return [], [], [], warnings
    result = compare(load_side(outs["base"]), load_side(outs["head"]), fail=settings.fail,
                     accuracy_drop=settings.accuracy_drop, metrics=SIDE_RUN_METRICS, allow_partial=True)
    return (result.comparisons, result.only_baseline, result.only_current,
            warnings + [f"memory/accuracy: {w}" for w in result.warnings])


# --- the whole run ---------------------------------------------------------------------------------


@dataclass
class ABRun:
    """A finished `seqbench ab`: compare's result plus what only ab knows."""

    result: CompareResult
    noise: dict[str, Any]
    units: list[UnitResult]
    sides: dict[str, SideEnv]
    hello: dict[str, dict[str, Any]]
    suite: str
    seed: int
    settings: ABSettings
    wall_s: float


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "seqbench" / "ab"


def run_ab(base: str, head: str, suite_ref: str = "smoke", overrides: list[str] | None = None,
           settings: ABSettings = ABSettings(), *, device: str | None = None, work_dir: str | Path | None = None,
           cache_dir: str | Path | None = None, pythonpath: str = ".", progress: Progress = lambda msg: None) -> ABRun:
    """Time the suite's throughput and latency cells on BASE and HEAD interleaved, judge the memory and
    accuracy cells of each side's own run, and return the verdicts (see the module docstring)."""
    from seqbench.bench.run.config import load_suite, resolve_suite_path
    from seqbench.bench.run.env import resolve_device
    from seqbench.bench.run.matrix import expand

    t_start = time.perf_counter()
    if settings.min_rounds < 2 or settings.max_rounds < settings.min_rounds:
        raise CompareInputError(f"--rounds {settings.min_rounds}:{settings.max_rounds}: need 2 <= MIN <= MAX")
    if not 0 < settings.block_s <= 10:
        raise CompareInputError(f"--block-ms {settings.block_s * 1e3:g}: must be in (0, 10000]")
    overrides = list(overrides or [])
    head_root = _checkout_root(Path(head).resolve()) if Path(head).is_dir() else None
    if head_root is not None and not is_seqbench_checkout(head_root) and (head_root / pythonpath).is_dir():
        sys.path.insert(0, str((head_root / pythonpath).resolve()))  # the suite names HEAD's own models
    suite_path = resolve_suite_path(suite_ref).resolve()
    suite = load_suite(suite_path, overrides)
    device = resolve_device(device or suite.device)
    cpus = worker_cpus(suite.threads, settings.cpus)
    units = timing_units(suite, expand(suite, device), cpus)
    seed = settings.seed if settings.seed is not None else secrets.randbits(32)
    rng = random.Random(seed)
    with ExitStack() as stack:
        if work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="seqbench-ab-")))
        else:
            work = Path(work_dir).resolve()
            work.mkdir(parents=True, exist_ok=True)
        cache = Path(cache_dir).resolve() if cache_dir else _default_cache()
        cache.mkdir(parents=True, exist_ok=True)
        sides = resolve_sides({"base": base, "head": head}, work, cache, stack, pythonpath)
        for s in sides.values():
            progress(f"{s.name}: {s.root} ({s.label}), python {s.python}")
        warnings: list[str] = []
        mem_comps, only_b, only_c = [], [], []
        if not settings.timing_only:
            mem_comps, only_b, only_c, more = side_runs(suite, suite_path, overrides, sides, work, settings, progress)
            warnings += more
        workers: dict[str, Worker] = {}
        if cpus:
            progress(f"both workers pinned to CPU {','.join(map(str, cpus))}")
        for name, side in sides.items():
            workers[name] = Worker(side, work / f"worker-{name}.log")
            stack.callback(workers[name].close)
        hello = {name: w.start() for name, w in workers.items()}
        comparable = hello["base"]["torch_version"] == hello["head"]["torch_version"]
        if not comparable:
            warnings.append(f"torch differs: {hello['base']['torch_version']} (base) vs "
                            f"{hello['head']['torch_version']} (head)")
            comparable = settings.allow_env_change
        results = []
        timeout = float(suite.timeout_s)
        for i, unit in enumerate(units, 1):
            res = measure_unit(unit, workers, settings, rng, len(units), timeout)
            results.append(res)
            progress(f"[{i}/{len(units)}] {cell_label(unit.row)} {unit.metric}: {_unit_status(res)}")
    t_comps, t_only_b, t_only_c = judge_units(results, settings, comparable)
    noise = noise_summary(results, settings)
    if noise.get("n") and noise["median"] > min(_limit(r.unit, settings) for r in results):
        warnings.append(f"the A/A noise floor (median ±{_pct(noise['median'])}) is wider than the threshold: "
                        "this machine was too noisy for the gate to resolve a change of that size")
    comparisons = t_comps + mem_comps
    comparisons.sort(key=lambda c: (SEVERITY.index(c.verdict), c.label, c.metric))
    if not comparisons:
        raise CompareInputError(f"nothing compared: suite {suite.name!r} has no timing, memory or accuracy cell "
                                "that ran on both sides")
    result = CompareResult(sides["base"].label, sides["head"].label, comparisons, t_only_b + only_b,
                           t_only_c + only_c, warnings, settings.strict)
    return ABRun(result, noise, results, sides, hello, suite.name, seed, settings, time.perf_counter() - t_start)


def _unit_status(res: UnitResult) -> str:
    if res.errors:
        return "error: " + "; ".join(f"{k}: {v}" for k, v in res.errors.items())
    if res.skipped:
        return "skipped: " + "; ".join(f"{k}: {v}" for k, v in res.skipped.items())
    assert res.test is not None
    return (f"{_pct(res.test.ratio - 1.0)} [{_pct(res.test.ci_low - 1.0)}, {_pct(res.test.ci_high - 1.0)}] "
            f"in {len(res.rounds)} rounds, {res.wall_s:.1f} s")


# --- output ----------------------------------------------------------------------------------------

AB_LEGEND = ("<sub>timing: interleaved ABBA blocks, one paired ratio per round; regression = median ratio past "
             "the limit AND Wilcoxon signed-rank p (Holm) < 0.05 AND the 95% bootstrap interval wholly on the slow "
             "side; pass = the interval inside the limit; "
             "inconclusive = too noisy to tell. Noise floor: the same statistics between halves of each side's "
             "own blocks.</sub>")


def _header(run: ABRun) -> str:
    s = run.settings
    return (f"seqbench ab: suite {run.suite}, {len(run.units)} timings, blocks of ~{s.block_s * 1e3:g} ms in ABBA "
            f"rounds ({s.min_rounds}-{s.max_rounds} per timing, order seed {run.seed}), {run.wall_s:.0f} s")


def render_ab_table(run: ABRun) -> str:
    """compare's terminal table with the verdict line first and last, the noise floor under it."""
    summary = render.summary_line(run.result)
    lines = [x for x in render.render_table(run.result).split("\n") if x != summary]
    return "\n".join([summary, noise_line(run.noise), _header(run), *lines, "", summary])


def render_ab_markdown(run: ABRun) -> str:
    lines = render.render_markdown(run.result).split("\n")
    lines[0] = "## seqbench ab"
    if lines[-1].startswith("<sub>"):
        lines[-1] = AB_LEGEND
    summary = f"**{render.summary_line(run.result)}**"
    at = lines.index(summary) + 1 if summary in lines else 1
    lines[at:at] = ["", render._md_escape(noise_line(run.noise)), "", render._md_escape(_header(run))]
    return "\n".join([*lines, "", summary])


def ab_document(run: ABRun) -> dict[str, Any]:
    """compare's JSON document plus an `ab` section: sides, settings, noise floor, per-timing rounds."""
    doc = json.loads(render.render_json(run.result))
    doc["ab"] = {
        "suite": run.suite, "seed": run.seed, "wall_s": round(run.wall_s, 2),
        "block_s": run.settings.block_s, "rounds": [run.settings.min_rounds, run.settings.max_rounds],
        "sides": {n: {"spec": s.spec, "root": str(s.root), "python": s.python, "sha": s.sha, "dirty": s.dirty,
                      **{k: run.hello.get(n, {}).get(k) for k in ("layout", "torch_version")}}
                  for n, s in run.sides.items()},
        "noise_floor": run.noise,
        "timings": [{"cell_id": r.unit.cell.cell_id, "label": cell_label(r.unit.row), "metric": r.unit.metric,
                     "mode": r.unit.mode, "calls": r.calls, "orders": r.orders, "wall_s": round(r.wall_s, 3),
                     "rounds": r.rounds, "noise_floor": r.noise_floor, "errors": r.errors, "skipped": r.skipped}
                    for r in run.units],
    }
    return doc


RENDER_AB = {"table": render_ab_table, "markdown": render_ab_markdown,
             "json": lambda run: json.dumps(ab_document(run), indent=2)}


# --- CLI -------------------------------------------------------------------------------------------


def _rounds(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    return int(lo), int(hi or lo)


def cmd_ab(args: argparse.Namespace) -> int:
    try:
        lo, hi = _rounds(args.rounds)
    except ValueError:
        raise CompareInputError(f"--rounds {args.rounds!r}: expected MIN:MAX, e.g. 10:40") from None
    cpus = None
    if args.cpus is not None:
        try:
            cpus = () if args.cpus == "none" else tuple(int(c) for c in args.cpus.split(","))
        except ValueError:
            raise CompareInputError(f"--cpus {args.cpus!r}: expected CPU numbers (e.g. 1 or 2,3) or none") from None
    settings = ABSettings(block_s=args.block_ms / 1e3, min_rounds=lo, max_rounds=hi, seed=args.seed, cpus=cpus,
                          timing_only=args.timing_only, strict=args.strict, accuracy_drop=args.accuracy_drop,
                          fail=tuple(parse_fail(s) for s in args.fail), allow_env_change=args.allow_env_change)
    quiet = args.quiet

    def progress(msg: str) -> None:
        if not quiet:
            print(f"seqbench ab: {msg}", file=sys.stderr, flush=True)

    run = run_ab(args.base, args.head, args.suite, args.set, settings, device=args.device, work_dir=args.work_dir,
                 cache_dir=args.cache_dir, pythonpath=args.pythonpath, progress=progress)
    print(RENDER_AB[args.format](run))
    return run.result.exit_code


def register_ab(subparsers: Any) -> None:
    """Add `seqbench ab` to the CLI."""
    p = subparsers.add_parser("ab", help="interleaved A/B timing of two checkouts; exit 1 on a regression",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", help="BASE: a checkout directory or a git ref of the repository here")
    p.add_argument("head", help="HEAD: the same kinds as BASE")
    p.add_argument("suite", nargs="?", default="smoke", help="shipped suite name or path (default smoke)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite key, on both sides (repeatable)")
    p.add_argument("--format", choices=sorted(RENDER_AB), default="table")
    p.add_argument("--fail", action="append", default=[], metavar="METRIC:±N%",
                   help="threshold of one metric, e.g. tokens_per_s:-5%% (repeatable)")
    p.add_argument("--strict", action="store_true", help="exit 1 on inconclusive verdicts too")
    p.add_argument("--accuracy-drop", type=float, default=ACCURACY_DROP,
                   help="tolerated absolute accuracy drop (default %(default)s)")
    p.add_argument("--timing-only", action="store_true", help="skip the memory and accuracy runs")
    p.add_argument("--block-ms", type=float, default=ABSettings.block_s * 1e3,
                   help="target duration of one timed block (default %(default)g)")
    p.add_argument("--rounds", default=f"{ABSettings.min_rounds}:{ABSettings.max_rounds}", metavar="MIN:MAX",
                   help="ABBA rounds per timing: MIN, then more while the verdict is open, up to MAX "
                        "(default %(default)s)")
    p.add_argument("--seed", type=int, help="seed of the ABBA/BAAB order (default: random, reported)")
    p.add_argument("--cpus", metavar="LIST",
                   help="CPUs both workers share, e.g. 1 or 2,3; none: no pinning (default: the last `threads` "
                        "CPUs of the suite)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override the suite's device")
    p.add_argument("--pythonpath", default=".", metavar="DIR",
                   help="checkouts of your own project (not seqbench): the folder, relative to each side's root, "
                        "that holds the package of the suite's models; put first on sys.path (default: the root)")
    p.add_argument("--allow-env-change", action="store_true", help="judge timings even when torch versions differ")
    p.add_argument("--work-dir", help="keep the side runs and worker logs here (default: a temporary folder)")
    p.add_argument("--cache-dir", help="virtual environments of checkouts (default ~/.cache/seqbench/ab)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_ab)
