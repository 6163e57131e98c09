"""The Ray executor against the local one: same cells, statuses and deterministic values; a
Ray worker killed mid-cell costs at most that cell; Ctrl-C and a missing Ray are handled.

One local Ray instance (2 CPUs on 127.0.0.1) serves the in-process tests; the executor uses
it as it is. Every test checks that no process it caused is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from seqbench.bench.cli import main
from seqbench.bench.run.config import load_suite
from seqbench.bench.run.matrix import expand
from seqbench.bench.run.runner import Progress, execute, read_rows

try:
    import ray
except ImportError:  # the extra is not installed: the Ray tests skip, the install hint is still tested
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install 'seqbench[ray]')")
linux = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")

MINI = """\
name: mini
device: cpu
threads: 1
timeout_s: 90
defaults: {d_model: 16, n_layers: 1}
models:
  lstm: {family: lstm}
  gru: {family: gru}
tasks:
  copy: {task: copy, n_copy: 3, delay: 4}
measures:
  static: {}
  accuracy: {steps: 8, lrs: [0.003], batch_size: 8, eval_batches: 1, length_factors: [1]}
  throughput: {warmup: 1, repeats: 2, min_time_s: 0.01}
shapes: {batch_size: [2], seq_len: [16]}
"""

# the throughput cells last a few seconds each: long enough to kill their Ray worker mid-cell
SLOW = """\
name: slow
device: cpu
threads: 1
timeout_s: 90
defaults: {d_model: 16, n_layers: 1}
models:
  lstm: {family: lstm}
  gru: {family: gru}
measures:
  static: {}
  throughput: {warmup: 1, repeats: 2, min_time_s: 1.5, modes: [inference, training]}
shapes: {batch_size: [2], seq_len: [8]}
faults:
  - {match: {model: gru, measure: static}, kind: kill}
"""

# the gru throughput cell hangs until Ctrl-C
INTERRUPT = """\
name: interrupt
device: cpu
threads: 1
timeout_s: 90
defaults: {d_model: 16, n_layers: 1}
models:
  lstm: {family: lstm}
  gru: {family: gru}
measures:
  static: {}
  throughput: {warmup: 1, repeats: 2, min_time_s: 0.01}
shapes: {batch_size: [2], seq_len: [16]}
faults:
  - {match: {model: gru, measure: throughput}, kind: hang}
"""

# values that do not depend on timing: with fixed seeds and one thread, bit-for-bit equal
DETERMINISTIC = {"params", "state_bytes", "flops_per_token", "accuracy", "token_accuracy", "sequence_accuracy",
                 "eval_loss", "train_loss", "steps_to_90pct"}
ROW_KEY = ("cell_id", "metric", "mode", "lr", "step", "eval_seq_len", "length_factor", "distance", "position",
           "split", "best")


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, start time, cmdline) of every live process, from /proc (zombies left out)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            out[int(d.name)] = (int(fields[1]), int(fields[19]), cmd)
    return out


def _descendants(root: int, procs: dict[int, tuple[int, int, str]]) -> set[int]:
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in procs.items() if ppid in frontier} - found
        found |= frontier
    return found


def _identities(pids: set[int], procs: dict[int, tuple[int, int, str]]) -> set[tuple[int, int]]:
    """(pid, start time): a process's identity even when its pid is reused later."""
    return {(pid, procs[pid][1]) for pid in pids if pid in procs}


def _wait_gone(pids: set[int], procs: dict[int, tuple[int, int, str]], timeout_s: float = 20.0) -> set[int]:
    """The processes among `pids` (as they were in the snapshot `procs`) still alive after timeout_s."""
    ids = _identities(pids, procs)
    deadline = time.monotonic() + timeout_s
    while True:
        left = ids & _identities({pid for pid, _ in ids}, _procs())
        if not left or time.monotonic() > deadline:
            return {pid for pid, _ in left}
        time.sleep(0.2)


@pytest.fixture(scope="module")
def ray_instance():
    if ray is None:
        pytest.skip("ray is not installed (pip install 'seqbench[ray]')")
    before = set(_procs())
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="WARNING")
    servers = _descendants(os.getpid(), _procs()) - before  # gcs, raylet, agents
    yield ray
    procs = _procs()
    started = servers | {pid for s in servers for pid in _descendants(s, procs)}  # + workers, cell processes
    ray.shutdown()
    left = _wait_gone(started, procs)
    assert servers and not left, f"Ray processes left running after ray.shutdown(): {[procs[p] for p in left]}"


def _by_cell(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["cell_id"], []).append(r)
    return out


def _once_each(rows: list[dict[str, Any]]) -> bool:
    """Each cell's rows form one contiguous block: no cell was recorded twice."""
    blocks = [r["cell_id"] for i, r in enumerate(rows) if i == 0 or rows[i - 1]["cell_id"] != r["cell_id"]]
    return len(blocks) == len(set(blocks))


def _ray_worker(title: str, exclude: set[int] = frozenset(), timeout_s: float = 60.0) -> tuple[int, set[int]]:
    """The pid of the Ray worker whose process title starts with `title`, and its children."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs = _procs()
        for pid, (_, _, cmd) in procs.items():
            if cmd.startswith(title) and pid not in exclude:
                return pid, _descendants(pid, procs)
        time.sleep(0.05)
    raise AssertionError(f"no running Ray worker titled {title!r} within {timeout_s:g}s")


def test_without_ray_says_how_to_install(tmp_path: Path, monkeypatch, capsys):
    suite = tmp_path / "mini.yaml"
    suite.write_text(MINI)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("seqbench: error:") and "pip install 'seqbench[ray]'" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run" / "results.jsonl").exists()


@needs_ray
def test_unreachable_cluster_is_a_clear_error(tmp_path: Path, capsys):
    if ray.is_initialized():
        pytest.skip("a Ray instance runs in this process: the executor would use it")
    if Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a `ray start` cluster runs on this machine: --address auto would join it")
    suite = tmp_path / "mini.yaml"
    suite.write_text(MINI)
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--executor", "ray", "--address", "auto"]) == 2
    err = capsys.readouterr().err
    assert "cannot start or reach the Ray cluster at 'auto'" in err and "Traceback" not in err
    assert not ray.is_initialized()


@needs_ray
@linux
def test_ctrl_c_then_resume(tmp_path: Path):
    """The executor's own local instance: Ctrl-C keeps the finished cells, cancels the one in
    flight and shuts Ray down (no process of the run left); --resume runs only the rest."""
    suite = tmp_path / "interrupt.yaml"
    suite.write_text(INTERRUPT)
    run_dir = tmp_path / "run"
    results = run_dir / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(suite), "--out", str(run_dir),
                             "--executor", "ray"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len({r["cell_id"] for r in read_rows(results)}) < 3:
        time.sleep(0.2)
    hanging, _ = _ray_worker("ray::seqbench throughput gru", timeout_s=10)
    procs = _procs()
    started = _descendants(proc.pid, procs)
    assert hanging in started
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    left = _wait_gone(started, procs)
    assert not left, f"processes of the interrupted Ray run are still running: {[procs[p] for p in left]}"
    rows = read_rows(results)
    assert len(_by_cell(rows)) == 3 and all(r["status"] == "ok" for r in rows)
    # finish with the local executor (the fault lifted; faults are not part of a cell's id)
    finish = execute(load_suite(run_dir / "suite.yaml", ["faults=[]"]), run_dir, quiet=True)
    assert finish.skipped_done == 3 and not finish.failed
    rows = read_rows(results)
    assert _once_each(rows) and len(_by_cell(rows)) == 4 and all(r["status"] == "ok" for r in rows)


@needs_ray
@linux
def test_ray_matches_local_executor(ray_instance, tmp_path: Path, capsys, monkeypatch):
    suite = tmp_path / "mini.yaml"
    suite.write_text(MINI)
    local = execute(load_suite(suite), tmp_path / "local", quiet=True)
    assert not local.interrupted and not local.failed
    events: list[tuple[str, str, str]] = []
    monkeypatch.setattr(Progress, "event", lambda self, kind, cell, msg: events.append((kind, cell.measure, msg)))
    assert main(["run", str(suite), "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert "6 cells run; 0 failed" in capsys.readouterr().out
    # the tasks' start and progress messages reached the driver's progress line
    assert {kind for kind, _, _ in events} == {"start", "progress"}, events
    assert any(measure == "accuracy" and msg.startswith("lr ") for _, measure, msg in events)

    rows_local = read_rows(tmp_path / "local" / "results.jsonl")
    rows_ray = read_rows(tmp_path / "ray" / "results.jsonl")
    cells = {c.cell_id for c in expand(load_suite(suite))}
    assert len(cells) == 6 and set(_by_cell(rows_ray)) == set(_by_cell(rows_local)) == cells
    assert _once_each(rows_ray)
    status = {cid: sorted(r["status"] for r in rs) for cid, rs in _by_cell(rows_local).items()}
    assert {cid: sorted(r["status"] for r in rs) for cid, rs in _by_cell(rows_ray).items()} == status
    assert {r["threads"] for r in rows_ray} == {1} and {r["run_id"] for r in rows_ray} == {"ray"}

    def values(rows: list[dict[str, Any]]) -> dict[tuple, Any]:
        return {tuple(r[k] for k in ROW_KEY): r["value"] for r in rows if r["metric"] in DETERMINISTIC}

    want, got = values(rows_local), values(rows_ray)
    assert got == want
    metrics = {key[1] for key in want}
    assert {"params", "state_bytes", "flops_per_token", "accuracy", "train_loss"} <= metrics
    # every row kind of the local run is there on Ray, timings included
    assert {tuple(r[k] for k in ROW_KEY) for r in rows_ray} == {tuple(r[k] for k in ROW_KEY) for r in rows_local}
    assert all(r["value"] > 0 for r in rows_ray if r["metric"] == "tokens_per_s")
    report = tmp_path / "ray" / "report" / "index.html"
    assert report.is_file()


@needs_ray
@linux
def test_killed_ray_worker_costs_only_its_cell(ray_instance, tmp_path: Path):
    suite_path = tmp_path / "slow.yaml"
    suite_path.write_text(SLOW)
    suite = load_suite(suite_path)
    run_dir = tmp_path / "run"
    result: dict[str, Any] = {}
    def drive() -> None:
        try:
            result["run"] = execute(suite, run_dir, executor="ray", quiet=True)
        except BaseException as exc:  # noqa: BLE001 — reported by the assertion below
            result["error"] = exc

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        # lstm throughput: its worker is killed once -> Ray runs the cell again, which succeeds
        lstm, lstm_children = _ray_worker("ray::seqbench throughput lstm")
        time.sleep(1.0)  # well inside the cell: its process is running the measure
        procs = _procs()
        lstm_children = _descendants(lstm, procs) | lstm_children
        os.kill(lstm, signal.SIGKILL)
        # gru throughput: killed, and its retry killed too -> recorded as an error row
        gru, _ = _ray_worker("ray::seqbench throughput gru")
        os.kill(gru, signal.SIGKILL)
        gru_retry, _ = _ray_worker("ray::seqbench throughput gru", exclude={gru})
        os.kill(gru_retry, signal.SIGKILL)
    finally:
        driver.join(timeout=180)
    assert not driver.is_alive() and "error" not in result, result
    # the cell process had seconds of measuring left: it goes at once, with its Ray worker
    left = _wait_gone(lstm_children, procs, timeout_s=2.0)
    assert lstm_children and not left, f"outlived their killed Ray worker: {[procs[p] for p in left]}"

    rows = read_rows(run_dir / "results.jsonl")
    assert _once_each(rows) and result["run"].rows == rows
    by_cell = _by_cell(rows)
    assert set(by_cell) == {c.cell_id for c in expand(suite)}  # nothing lost
    by_name = {(rs[0]["model"], rs[0]["measure"]): rs for rs in by_cell.values()}
    assert all(r["status"] == "ok" for r in by_name["lstm", "static"])
    lstm_tp = by_name["lstm", "throughput"]
    assert all(r["status"] == "ok" for r in lstm_tp), lstm_tp[0]["error"]
    assert {r["mode"] for r in lstm_tp if r["metric"] == "tokens_per_s"} == {"inference", "training"}
    (gru_tp,) = by_name["gru", "throughput"]
    assert gru_tp["status"] == "error" and "Ray worker died twice" in gru_tp["error"], gru_tp["error"]
    # the cell process itself killed inside a Ray worker: recorded as the local executor does
    (gru_static,) = by_name["gru", "static"]
    assert gru_static["status"] == "error" and "SIGKILL" in gru_static["error"]
