"""The GPU paths (issue 18): mamba_ssm's kernels against the reference backend on one state_dict, and
the CUDA side of the timing and memory measures. Each is skipped without a CUDA device, with the
reason; scripts/gpu_run.sh runs the same checks, and more, on the H200 machine.

One test runs on CPU: scripts/gpu_reference.py's dry mode on its tiny shapes, checking that every
section leaves rows and a summary, and that the suite section leaves a run directory (on the GPU
machine: `PYTEST=1 bash scripts/gpu_run.sh` runs this file after the script).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from seqbench import models

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_reference.py"
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="no CUDA device (torch.cuda.is_available() is False): GPU-only check; "
                     "run it on the GPU machine (scripts/gpu_run.sh runs the same checks there)")


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_reference", module)
    spec.loader.exec_module(module)
    return module


def mamba_ssm_or_skip() -> None:
    from seqbench.models.mamba import _mamba_ssm_kernels

    kernels, error = _mamba_ssm_kernels()
    if kernels is None:
        pytest.skip(f"mamba_ssm not importable ({error}); install the GPU kit (scripts/gpu_run.sh) or "
                    "pip install 'seqbench[mamba]'")


# --------------------------------------------------------------------------- mamba_ssm vs reference


@needs_cuda
@pytest.mark.parametrize("T", [37, 2100])  # shorter than, and across, the kernel's 2048-step chunk
def test_mamba_ssm_backend_equals_reference_on_one_state_dict(T: int) -> None:
    """Forward and every gradient, fp32, TF32 off: allclose(rtol=6e-4, atol=2e-3) (mamba_ssm's own
    fp32 tolerance), the reference backend being seqbench's pure-PyTorch scan."""
    mamba_ssm_or_skip()
    from seqbench.models.mamba import MambaMixer

    torch.manual_seed(0)
    ref = MambaMixer(models.make("mamba", d_model=64, backend="reference")).cuda()
    ker = MambaMixer(models.make("mamba", d_model=64, backend="mamba_ssm")).cuda()
    ker.load_state_dict(ref.state_dict())
    assert ker.impl == "mamba_ssm" and ref.impl == "reference"
    g = torch.Generator().manual_seed(1)
    u, gy = torch.randn(2, T, 64, generator=g).cuda(), torch.randn(2, T, 64, generator=g).cuda()
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        results = []
        for m in (ref, ker):
            x = u.clone().requires_grad_()
            out = m(x)
            out.backward(gy)
            results.append({"out": out.detach(), "du": x.grad, **{n: p.grad for n, p in m.named_parameters()}})
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    want, got = results
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=6e-4, atol=2e-3, msg=lambda m, n=name: f"{n}: {m}")


# --------------------------------------------------------------------------- timing on CUDA


@needs_cuda
def test_cuda_time_calls_agrees_with_a_synchronized_wall_clock() -> None:
    """seqbench's CUDA-event sample of a ~10 ms workload vs host perf_counter around synchronized
    back-to-back calls (launch overhead is negligible at this size): within 5%."""
    from seqbench.bench.measures.timing import time_calls

    device = torch.device("cuda")
    a = torch.randn(4096, 4096, device=device)

    def fn() -> torch.Tensor:
        c = a
        for _ in range(8):
            c = c @ a * 1e-3
        return c

    for _ in range(3):
        fn()
    event_s = sorted(time_calls(fn, device, inner=5) for _ in range(5))[2]
    walls = []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        walls.append((time.perf_counter() - t0) / 5)
    wall_s = sorted(walls)[2]
    assert event_s > 1e-3
    assert abs(event_s / wall_s - 1) < 0.05, f"events {event_s * 1e3:.3f} ms vs wall clock {wall_s * 1e3:.3f} ms"


@needs_cuda
def test_throughput_measure_on_cuda_matches_its_workload_timed_independently() -> None:
    """tokens/s of the throughput measure vs B*T over the synchronized wall time of the same workload."""
    from seqbench.bench.measures import MEASURES
    from seqbench.bench.measures.train import random_batch, workload_fn

    gpu_reference = load_script()
    ctx = type("C", (), {"dry": False, "device": torch.device("cuda")})()
    cfg = {"d_model": 128, "n_layers": 2}
    hctx = gpu_reference.harness_context(ctx, "lstm", "lstm", cfg, torch.float32, "inference", 8, 512)
    rows = MEASURES["throughput"].fn(hctx)
    tps = next(r["value"] for r in rows if r["metric"] == "tokens_per_s")
    model = hctx.build_model()
    fn = workload_fn(model, "inference", random_batch(model, 8, 512, torch.device("cuda")))
    for _ in range(3):
        fn()
    walls = []
    for _ in range(7):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        walls.append((time.perf_counter() - t0) / 10)
    ref_tps = 8 * 512 / sorted(walls)[3]
    assert abs(tps / ref_tps - 1) < 0.10, f"harness {tps:.0f} tokens/s vs wall clock {ref_tps:.0f}"


# --------------------------------------------------------------------------- memory on CUDA


@needs_cuda
def test_cuda_peak_bytes_is_the_largest_live_set_of_the_call() -> None:
    """Allocate 64 MiB, then 32 MiB, free the 64, allocate 16: the peak increase is 96 MiB exactly
    (multiples of 2 MiB are the caching allocator's own block sizes), plus extra_bytes held inside."""
    from seqbench.bench.measures.memory import peak_bytes

    device = torch.device("cuda")
    MiB = 2**20

    def fn() -> None:
        a = torch.empty(64 * MiB, dtype=torch.uint8, device=device)
        b = torch.empty(32 * MiB, dtype=torch.uint8, device=device)
        del a
        c = torch.empty(16 * MiB, dtype=torch.uint8, device=device)
        del b, c

    fn()  # the pool may now hold these blocks: reserved, not allocated, so they do not count
    assert peak_bytes(fn, device) == 96 * MiB
    assert peak_bytes(fn, device, extra_bytes=8 * MiB) == 104 * MiB


@needs_cuda
def test_memory_measure_on_cuda_counts_training_above_inference() -> None:
    from seqbench.bench.measures import MEASURES, MeasureContext
    from seqbench.bench.run.matrix import Cell

    cfg = {"d_model": 128, "n_layers": 2}
    cell = Cell(model="lstm", family="lstm", model_config=cfg, task=None, task_kind=None, task_params={},
                measure="memory", batch_size=8, seq_len=512, device="cuda")

    def build():
        torch.manual_seed(0)
        return models.build("lstm", **cfg).cuda()

    ctx = MeasureContext(cell=cell, build_model=build, task=None, device=torch.device("cuda"), dtype=torch.float32,
                         settings=MEASURES["memory"].make_settings({}))
    peaks = {r["mode"]: r["value"] for r in MEASURES["memory"].fn(ctx) if r["metric"] == "peak_bytes"}
    activations = 8 * 512 * 128 * 4  # one (B, T, D) fp32 tensor: every mode holds at least the output
    assert peaks["inference"] >= activations
    assert peaks["training"] > peaks["inference"]


# --------------------------------------------------------------------------- the script, on CPU


def test_dry_run_leaves_rows_summary_and_a_run_directory(tmp_path: Path) -> None:
    """The CPU rehearsal: each section records its results (or why it skipped) as it goes, and the
    suite section runs the real harness into a run directory that seqbench reads. Also: the suite
    planner's per-call time at 16k, extrapolated from 1k and 4k, keeps linear growth linear and
    quadratic growth quadratic."""
    from seqbench.bench.results.io import read_plan, read_rows

    cost = load_script().CostModel(
        call_s={("lstm", "float32", "training", 1024): 1.0, ("lstm", "float32", "training", 4096): 4.0,
                ("transformer", "float32", "training", 1024): 1.0, ("transformer", "float32", "training", 4096): 16.0},
        step_s={})
    assert math.isclose(cost.call("lstm", "float32", "training", 16384), 16.0)
    assert math.isclose(cost.call("transformer", "float32", "training", 16384), 256.0)
    assert cost.call("mamba", "float32", "training", 16384) == math.inf  # never measured: never planned in

    out = tmp_path / "out"
    sections = ["env", "kernels", "numerics", "mamba_block", "suite", "modern"]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry", "--out", str(out), "--budget-s", "25",
                           "--sections", ",".join(sections)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert {r["section"] for r in rows} >= set(sections)
    assert {r["status"] for r in rows} <= {"pass", "fail", "info", "skip", "error", "budget"}
    assert not [r for r in rows if r["status"] in ("fail", "error")], [r for r in rows if r["status"] in ("fail", "error")]
    assert all(r.get("reason") for r in rows if r["status"] in ("skip", "budget"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"].startswith("dry")
    for name in sections:
        assert summary["sections"][name]["status"] != "running", name
    assert summary["sections"]["fidelity"]["status"] == "not selected"
    step = [r for r in rows if r["check"].startswith("step == forward: lstm")]
    assert step and step[0]["status"] == "pass"
    assert (out / "summary.md").read_text().startswith("# GPU reference run")
    assert json.loads((out / "env.json").read_text())["device"] == "cpu"
    with tarfile.open(out / "h200-run.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    run_dir = tmp_path / "h200"
    assert {"env.json", "suite.yaml", "cells.jsonl"} <= {p.name for p in run_dir.iterdir()}
    planned = {c["cell_id"] for c in read_plan(run_dir)}
    done = {r["cell_id"] for r in read_rows(run_dir / "results.jsonl")}
    run = next(r for r in rows if r["section"] == "suite" and r["check"] == "run")
    if run["status"] == "pass":  # the planner fitted the suite into the budget left to it
        assert planned and done == planned
    else:  # cut at the section's deadline (a slow machine): what finished is kept, the rest resumable
        assert run["status"] == "budget" and done <= planned
