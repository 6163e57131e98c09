"""GPU reference run: the official Mamba kernels verified and timed, the harness checked against an
independent timer, and a cut-down `standard` suite, as one prepared script for one H200 and a few
minutes of GPU time.

    python scripts/gpu_reference.py --dry --out /tmp/gpuref    # every section on CPU, tiny shapes (< 2 min)
    bash scripts/gpu_run.sh                                     # on the GPU machine: installs the kit, runs this

Sections, in priority order. Each has a wall-time budget and the run has a deadline (--budget-s), so a
run cut short still leaves its results: every result is a line of OUT/rows.jsonl the moment it is
known (flushed and fsynced), and OUT/summary.json and OUT/summary.md are rewritten after each one.

  env          GPU, driver, torch / CUDA / cuDNN / Triton versions, the SDPA backends usable per dtype,
               TF32 flags; OUT/env.json is seqbench's own fingerprint of the machine
  kernels      the GPU kit's `selective_scan_cuda` stand-in loads, and its fwd/bwd agree with a naive loop
               (fp32, bf16), checked in a child process (a crash there costs only this check); if it
               fails, the kit's rebuild command is printed and, with --rebuild, run
  numerics     selective_scan_fn (the CUDA kernel) vs mamba_ssm's selective_scan_ref vs seqbench's
               reference scan; MambaMixer backend "mamba_ssm" vs "reference" on one state_dict, forward
               and every gradient, fp32 and bf16; step() == forward() on CUDA for every streamable family
  mamba_block  seqbench's Mamba block (mamba_ssm backend) vs mamba_ssm.modules.mamba_simple.Mamba loaded
               with the same state_dict: outputs, and forward+backward time by triton.testing.do_bench
               (goal: within 5%)
  fidelity     seqbench's throughput measure vs do_bench on the same workload (goal: within 5%) for lstm
               (cuDNN), transformer (the SDPA kernel that ran, per dtype) and mamba
  suite        bench/suites/h200.yaml, planned from a first timing pass to fit its budget, run by the
               real harness (seqbench.bench.run.runner, in a child process) into a normal run directory
               (results.jsonl, env.json, suite.yaml, cells.jsonl) that `seqbench report` and
               `seqbench compare` read; OUT/h200-run.tar.gz holds it
  modern       Mamba-2 (mamba_ssm's Triton SSD) and the fla layers vs seqbench's references, for the
               families `seqbench.models.names()` lists (a child process: a Triton compile cannot be
               interrupted, so the deadline kills the process instead)

Tolerances:
  fp32   torch.allclose(rtol=6e-4, atol=2e-3) on the output and every gradient (mamba_ssm's own fp32
         tolerance, tests/ops/test_selective_scan.py), TF32 off for the numerics
  bf16   against the fp32 reference run on the same bf16-rounded weights and inputs:
         max|k - r| <= 5e-2 * max|r| and ||k - r|| <= 3e-2 * ||r||, output and every gradient. On CPU an
         emulation of the kernel (a bf16 block whose scan runs in fp32) stays under 1.2e-2 and 1.0e-2
         at B=2, T=2100, d_model=128; seqbench's reference run wholly in bf16 reaches 0.6 and 0.3 on
         the scan parameters' gradients (recorded beside each check for comparison)
  triton fp32 kernels of the modern families (Triton may use TF32): max|k - r| <= 1e-2 * max|r|
         and ||k - r|| <= 3e-3 * ||r||
  step   max|step - forward| <= 1e-4 * max(max|forward|, 1) (tests/test_models_common.py)
  speed  |ratio - 1| <= 5%, the median of interleaved rounds (under --dry, CPU timings of tiny shapes
         are recorded as info: they rehearse the code, they decide nothing)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import traceback
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SUITE_FILE = ROOT / "bench" / "suites" / "h200.yaml"
SECTION_ORDER = ("env", "kernels", "numerics", "mamba_block", "fidelity", "suite", "modern")
SPEED_TOLERANCE = 0.05  # |ratio - 1| for the timing comparisons
REBUILD_CMD = "TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python3 {kit}/ssops/build_sm90.py"
REBUILT_SO = ROOT / "build" / "selective_scan_ops" / "selective_scan_ops.so"  # where build_sm90.py writes
REBUILD_CAP_S = 360.0  # the kit README estimates 3-5 min on 16 cores


# ============================================================================ tolerances


@dataclass(frozen=True)
class Tolerance:
    """A pass criterion for one tensor against its reference (any combination of the three)."""

    label: str
    rtol: float | None = None  # with atol: torch.allclose(a, b, rtol, atol)
    atol: float | None = None
    max_rel: float | None = None  # max|a - b| <= max_rel * max|b|
    rel_l2: float | None = None  # ||a - b|| <= rel_l2 * ||b||


FP32 = Tolerance("allclose(rtol=6e-4, atol=2e-3)", rtol=6e-4, atol=2e-3)
BF16 = Tolerance("max|k-r| <= 5e-2 max|r|, ||k-r|| <= 3e-2 ||r|| (vs fp32 reference)", max_rel=5e-2, rel_l2=3e-2)
TRITON_FP32 = Tolerance("max|k-r| <= 1e-2 max|r|, ||k-r|| <= 3e-3 ||r|| (Triton may use TF32)",
                        max_rel=1e-2, rel_l2=3e-3)
STEP_RTOL = 1e-4  # tests/test_models_common.py: max|step - forward| <= 1e-4 * max(scale, 1)


def compare(a: torch.Tensor, b: torch.Tensor, tol: Tolerance) -> dict[str, Any]:
    """Error metrics of `a` against the reference `b` (same shape) and whether `tol` holds."""
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return {"passed": False, "error": f"shape {tuple(a.shape)} vs reference {tuple(b.shape)}"}
    diff = (a - b).abs()
    finite = bool(torch.isfinite(a).all())
    max_abs, scale = float(diff.max()), float(b.abs().max())
    rel_l2 = float(diff.norm() / b.norm().clamp_min(1e-30))
    out: dict[str, Any] = {"max_abs": max_abs, "max_ref": scale, "max_rel": max_abs / max(scale, 1e-30),
                           "rel_l2": rel_l2}
    passed = finite
    if tol.rtol is not None and tol.atol is not None:
        ratio = float((diff / (tol.atol + tol.rtol * b.abs())).max())
        out["tol_ratio"] = ratio  # <= 1 passes allclose
        passed = passed and ratio <= 1.0
    if tol.max_rel is not None:
        passed = passed and max_abs <= tol.max_rel * scale
    if tol.rel_l2 is not None:
        passed = passed and rel_l2 <= tol.rel_l2
    if not finite:
        out["error"] = "non-finite values"
    out["passed"] = passed
    return out


def compare_all(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], tol: Tolerance,
                context: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """compare() of every named tensor; `context` (optional): a second candidate whose errors are
    recorded beside (e.g. the reference backend run wholly in bf16). Worst tensor first in `worst`."""
    per: dict[str, Any] = {}
    for name, r in ref.items():
        if name not in got or got[name] is None or r is None:
            per[name] = {"passed": False, "error": "missing"}
            continue
        per[name] = compare(got[name], r, tol)
        if context is not None and context.get(name) is not None:
            c = compare(context[name], r, tol)
            per[name]["context_max_rel"], per[name]["context_rel_l2"] = c.get("max_rel"), c.get("rel_l2")
    failed = [n for n, m in per.items() if not m["passed"]]
    worst = max(per, key=lambda n: per[n].get("tol_ratio", per[n].get("max_rel", math.inf)) or 0.0)
    return {"passed": not failed, "failed": failed, "worst": worst, "tolerance": tol.label, "tensors": per}


# ============================================================================ recording


class BudgetExhausted(Exception):
    """A section's (or the run's) wall-time budget ran out; the section records it and the run moves on."""


@dataclass
class Budget:
    """A deadline on time.monotonic()."""

    deadline: float

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds


class Recorder:
    """OUT/rows.jsonl (one JSON object per result, flushed and fsynced as it comes) and
    OUT/summary.json + OUT/summary.md (rewritten atomically after every result)."""

    def __init__(self, out: Path, meta: dict[str, Any], append: bool = False, summaries: bool = True) -> None:
        self.out = out
        self.summaries = summaries  # False in a child section: the parent owns summary.json / summary.md
        out.mkdir(parents=True, exist_ok=True)
        self.rows_path = out / "rows.jsonl"
        if not append:
            self.rows_path.write_text("")
        self.t0 = time.monotonic()
        self.summary: dict[str, Any] = {**meta, "sections": {}}
        self.lock = threading.Lock()

    def row(self, section: str, check: str, status: str, **fields: Any) -> dict[str, Any]:
        """One result: status pass | fail | info | skip | error | budget."""
        r = {"section": section, "check": check, "status": status, "t_s": round(time.monotonic() - self.t0, 2),
             **fields}
        line = json.dumps(r, default=_json_default)
        with self.lock:
            with self.rows_path.open("a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
            sec = self.summary["sections"].setdefault(section, {"status": "running", "rows": []})
            sec["rows"].append(r)
        print(f"[{r['t_s']:7.1f}s] {section:<11} {status:<6} {check}  {_brief(fields)}", flush=True)
        self.write()
        return r

    def section(self, name: str) -> dict[str, Any]:
        return self.summary["sections"].setdefault(name, {"status": "running", "rows": []})

    def write(self) -> None:
        if not self.summaries:
            return
        with self.lock:
            text = json.dumps(self.summary, indent=1, default=_json_default)
            _atomic_write(self.out / "summary.json", text + "\n")
            _atomic_write(self.out / "summary.md", render_markdown(self.summary))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _brief(fields: dict[str, Any]) -> str:
    """A one-line digest of a row's fields for the log."""
    keys = ("reason", "error", "ratio", "worst", "max_err", "tokens_per_s", "impl", "value", "note", "path", "command")
    parts = []
    for k in keys:
        if k in fields and fields[k] is not None:
            v = fields[k]
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={str(v)[:160]}")
    return " ".join(parts)


def render_markdown(summary: dict[str, Any]) -> str:
    """summary.md: one table per section (check, status, the numbers that decide it)."""
    head = (f"started {summary.get('started_at')}, budget {summary.get('budget_s')} s, device "
            f"{summary.get('device_name', '?')}; mamba_ssm kernels: {summary.get('kernel_verdict', 'unchecked')}")
    lines = [f"# GPU reference run ({summary.get('mode')})", "", head, ""]
    for name in SECTION_ORDER:
        sec = summary["sections"].get(name)
        if sec is None:
            continue
        lines += [f"## {name}: {sec.get('status')}" + (f" ({sec['wall_s']:.0f} s)" if "wall_s" in sec else ""), ""]
        for note in sec.get("notes", []):
            lines.append(f"- {note}")
        if sec.get("rows"):
            lines += ["", "| check | status | detail |", "| --- | --- | --- |"]
            for r in sec["rows"]:
                detail = {k: v for k, v in r.items() if k not in ("section", "check", "status", "t_s", "tensors",
                                                               "samples", "plan", "table", "sdpa", "info",
                                                               "tokens_and_memory", "latency", "trace")}
                lines.append(f"| {r['check']} | {r['status']} | {_md_detail(detail)} |")
        if sec.get("table"):
            lines += ["", *sec["table"]]
        lines.append("")
    return "\n".join(lines) + "\n"


def _md_detail(d: dict[str, Any]) -> str:
    parts = []
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, float):
            parts.append(f"{k} {v:.4g}")
        elif isinstance(v, (dict, list)):
            parts.append(f"{k} {json.dumps(v, default=_json_default)[:200]}")
        else:
            parts.append(f"{k} {str(v)[:200]}")
    return "; ".join(parts).replace("|", "\\|")


# ============================================================================ context


@dataclass
class Shapes:
    """Problem sizes: the GPU ones, or the tiny ones of --dry."""

    scan: tuple[int, int, int, int]  # (batch, dim E, d_state N, seq_len): crosses the kernel's 2048 chunk
    block_d_model: int
    block_len: int
    step_len: int
    bench: tuple[int, int, int]  # mamba_block timing (batch_size, seq_len, d_model)
    fidelity: tuple[int, int]  # (batch_size, seq_len)
    fidelity_model: dict[str, int]  # d_model, n_layers
    probe_lens: tuple[int, int]  # suite timing pass: per-call time measured at these lengths
    modern: tuple[int, int, int]  # (batch_size, seq_len, d_model) of the modern-family numerics
    modern_bench: tuple[int, int, int]


GPU_SHAPES = Shapes(scan=(2, 64, 16, 2100), block_d_model=128, block_len=2100, step_len=40,
                    bench=(8, 4096, 256), fidelity=(8, 1024), fidelity_model={"d_model": 256, "n_layers": 4},
                    probe_lens=(1024, 4096), modern=(2, 1100, 128), modern_bench=(8, 4096, 256))
DRY_SHAPES = Shapes(scan=(1, 8, 4, 70), block_d_model=16, block_len=70, step_len=12,
                    bench=(2, 64, 32), fidelity=(2, 32), fidelity_model={"d_model": 32, "n_layers": 1},
                    probe_lens=(64, 128), modern=(1, 70, 32), modern_bench=(2, 64, 32))

# Section budgets (seconds): (cap on GPU, cap in --dry). A section also stops early enough to leave
# RESERVE_S to the sections after it.
SECTION_CAP = {"env": (30, 15), "kernels": (60, 20), "numerics": (100, 20), "mamba_block": (60, 10),
               "fidelity": (100, 25), "suite": (300, 45), "modern": (600, 20)}
RESERVE_S = {"env": (5, 2), "kernels": (5, 3), "numerics": (10, 3), "mamba_block": (5, 1), "fidelity": (5, 5),
             "suite": (90, 25), "modern": (0, 0)}


@dataclass
class Ctx:
    args: argparse.Namespace
    rec: Recorder
    device: torch.device
    dry: bool
    shapes: Shapes
    kit: Path | None
    work: Path
    deadline: float  # the run's, on time.monotonic()
    ssm: Any = None  # mamba_ssm.ops.selective_scan_interface, once it imports
    ssm_error: str | None = "not checked yet"
    kernel_verdict: str = "unchecked"  # unchecked | pass | fail: gates the mamba_ssm backend in the suite
    children: list[subprocess.Popen] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def kernels_can_run(ctx: Ctx) -> str | None:
    """None when mamba_ssm's CUDA kernels can run here, else why not."""
    if ctx.ssm is None:
        return f"mamba_ssm not importable ({ctx.ssm_error})"
    if not ctx.cuda:
        return "no CUDA: the selective-scan kernel and seqbench's mamba_ssm backend need CUDA tensors"
    return None


def dtype_of(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


@contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off for matmuls and cuDNN (convolutions, RNNs) inside: the numerics compare true fp32."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_ms(fn: Callable[[], Any], device: torch.device, *, rep_ms: float, warmup_ms: float = 25.0,
             grad_to_none: list[torch.Tensor] | None = None) -> tuple[float, str]:
    """(median ms per call of fn, the timer): triton.testing.do_bench on CUDA (CUDA events per call,
    L2 flushed between calls); on CPU (--dry) the same protocol with time.perf_counter."""
    if device.type == "cuda":
        from triton.testing import do_bench

        ms = do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none, return_mode="median")
        return float(ms), "triton.testing.do_bench"
    fn()
    t0 = time.perf_counter()
    for _ in range(5):
        fn()
    est_ms = max((time.perf_counter() - t0) / 5 * 1e3, 1e-3)
    for _ in range(max(1, int(warmup_ms / est_ms))):
        fn()
    times = []
    for _ in range(max(1, int(rep_ms / est_ms))):
        for x in grad_to_none or []:
            x.grad = None
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2], "perf_counter (dry: do_bench's protocol on CPU)"


def one_call_s(fn: Callable[[], Any], device: torch.device, warmup: int = 1) -> float:
    """Seconds of one call after `warmup` untimed calls (a coarse estimate for planning)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


# ============================================================================ section: env


def section_env(ctx: Ctx, budget: Budget) -> None:
    from seqbench.bench.run.env import environment

    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "packages": {name: _dist_version(name) for name in
                     ("triton", "mamba_ssm", "causal_conv1d", "fla-core", "flash-linear-attention", "einops",
                      "transformers", "numpy", "pandas")},
        "env": {k: os.environ.get(k) for k in ("PYTHONPATH", "TRITON_CACHE_DIR", "CUDA_VISIBLE_DEVICES",
                                               "SELECTIVE_SCAN_OPS_SO", "SEQBENCH_SOURCE_SHA")},
    }
    if ctx.cuda:
        p = torch.cuda.get_device_properties(ctx.device)
        info["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_bytes": p.total_memory,
                       "multiprocessors": p.multi_processor_count,
                       "l2_cache_bytes": getattr(p, "L2_cache_size", None)}
        info["nvidia_smi"] = _nvidia_smi()
    ctx.rec.summary["device_name"] = info.get("gpu", {}).get("name", platform.processor() or "cpu")
    ctx.rec.row("env", "versions", "info", info=info, torch=torch.__version__, cuda=torch.version.cuda,
                cudnn=info["cudnn"], gpu=info.get("gpu", {}).get("name"),
                driver=(info.get("nvidia_smi") or {}).get("driver_version"))
    ctx.rec.section("env")["info"] = info
    for dtype in (torch.float32, torch.bfloat16):
        sdpa = sdpa_backends(ctx.device, dtype, 64 if ctx.dry else 256)
        ctx.rec.row("env", f"sdpa backends {dtype_name(dtype)}", "info", sdpa=sdpa,
                    usable=[k for k, v in sdpa["backends"].items() if v == "ok"], default=sdpa["default"])
    env = environment(str(ctx.device) if ctx.cuda else "cpu")
    _atomic_write(ctx.rec.out / "env.json", json.dumps(env, indent=2, default=_json_default) + "\n")
    ctx.rec.row("env", "seqbench env.json", "info", path=str(ctx.rec.out / "env.json"),
                machine_class=env.get("machine_class"), calibration_s=env.get("calibration_s"))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> dict[str, str] | None:
    """name, driver, memory, clocks and power limit as nvidia-smi reports them (read only)."""
    fields = ["name", "driver_version", "memory.total", "clocks.sm", "clocks.max.sm", "power.limit",
              "persistence_mode", "compute_mode"]
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return dict(zip(fields, (v.strip() for v in out.splitlines()[0].split(","))))


def sdpa_backends(device: torch.device, dtype: torch.dtype, seq_len: int) -> dict[str, Any]:
    """Which scaled_dot_product_attention backends run a causal (B=2, H=8, T=seq_len, hs=32) call in
    `dtype` here ('ok' or the error), and the one torch picks by default."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from seqbench.models.transformer import _sdpa_kernel

    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(2, 8, seq_len, 32, generator=g).to(device=device, dtype=dtype) for _ in range(3))
    result: dict[str, str] = {}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            result[name] = "not in this torch"
            continue
        try:
            with sdpa_kernel([backend]):
                F.scaled_dot_product_attention(q, k, v, is_causal=True)
            synchronize(device)
            result[name] = "ok"
        except RuntimeError as exc:
            result[name] = str(exc).splitlines()[0][:160]
    flags = {}
    for flag in ("flash_sdp_enabled", "mem_efficient_sdp_enabled", "math_sdp_enabled", "cudnn_sdp_enabled"):
        fn = getattr(torch.backends.cuda, flag, None)
        flags[flag] = bool(fn()) if fn is not None else None
    return {"backends": result, "default": _sdpa_kernel(q, k, v, 0.0, True), "flags": flags}


# ============================================================================ section: kernels

PROBE = r"""
import json, sys, time, traceback
import torch
import torch.nn.functional as F
out = {"steps": []}
def step(name, fn):
    t0 = time.time()
    try:
        value = fn()
        out["steps"].append({"step": name, "ok": True, "s": round(time.time() - t0, 2), "value": value})
        return True
    except BaseException as exc:
        out["steps"].append({"step": name, "ok": False, "s": round(time.time() - t0, 2),
                             "error": f"{type(exc).__name__}: {exc}"[:600], "trace": traceback.format_exc()[-1500:]})
        return False
g = {}
def load():
    import selective_scan_cuda
    g["ssc"] = selective_scan_cuda
    return {"module": getattr(selective_scan_cuda, "__file__", None), "so": getattr(selective_scan_cuda, "_SO", None)}
def naive(u, delta, A, B, C, D, z, bias):  # u, delta, z (b, e, l); B, C (b, n, l): one step at a time, fp32
    d = F.softplus(delta + bias[:, None])
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        h = torch.exp(d[:, :, t, None] * A) * h + (d[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    return (torch.stack(ys, -1) + u * D[:, None]) * F.silu(z)
def run(dtype, device):
    torch.manual_seed(0)
    b, e, n, l = 2, 8, 4, 300
    u, delta, z = (torch.randn(b, e, l) for _ in range(3))
    delta = 0.5 * delta.sigmoid()
    A, D, bias = -0.5 * torch.rand(e, n), torch.randn(e), 0.5 * torch.rand(e)
    B, C, dout = torch.randn(b, n, l), torch.randn(b, n, l), torch.randn(b, e, l)
    cast = lambda t: t.to(device=device, dtype=dtype).contiguous()
    dev = lambda t: t.to(device).contiguous()
    ssc = g["ssc"]
    o, x, oz = ssc.fwd(cast(u), cast(delta), dev(A), cast(B)[:, None], cast(C)[:, None], dev(D), cast(z), dev(bias), True)
    grads = ssc.bwd(cast(u), cast(delta), dev(A), cast(B)[:, None], cast(C)[:, None], dev(D), cast(z), dev(bias),
                    cast(dout), x, o, None, True, False)
    names = ["u", "delta", "A", "B", "C", "D", "delta_bias", "z"]
    ins = [t.to(dtype).float().requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
    ref = naive(*ins)
    ref.backward(dout.to(dtype).float())
    ref_grads = dict(zip(["u", "delta", "A", "B", "C", "D", "z", "delta_bias"], [t.grad for t in ins]))
    rel = lambda a, r: float((a.float().cpu().reshape(r.shape) - r).abs().max() / r.abs().max().clamp_min(1e-30))
    torch.cuda.synchronize() if device == "cuda" else None
    gr = {k: rel(v, ref_grads[k]) for k, v in zip(names, grads)}
    return {"out_max_rel": rel(oz, ref.detach()), "grad_max_rel": max(gr.values()), "grads": gr}
device = sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else None)
if step("import selective_scan_cuda", load):
    if device is not None:
        step("fwd+bwd fp32 vs a naive loop", lambda: run(torch.float32, device))
        step("fwd+bwd bf16 vs a naive loop", lambda: run(torch.bfloat16, device))
    else:
        out["steps"].append({"step": "run the kernel", "ok": None, "error": "no CUDA"})
print("PROBE_JSON " + json.dumps(out))
"""

def run_probe(timeout_s: float, env: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, str]:
    """Run PROBE in a child python (a crash loading or launching the .so costs only the child):
    (its JSON or None, the tail of its output)."""
    try:
        proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=False,
                              timeout=max(5.0, timeout_s), env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as exc:
        return None, f"probe timed out after {exc.timeout:.0f} s"
    text = proc.stdout + proc.stderr
    for line in proc.stdout.splitlines():
        if line.startswith("PROBE_JSON "):
            return json.loads(line.removeprefix("PROBE_JSON ")), text[-2000:]
    return None, f"probe exited with {proc.returncode} (a crash loading the .so?): {text[-2000:]}"


def record_probe(ctx: Ctx, result: dict[str, Any] | None, tail: str, label: str) -> str:
    """Rows for each probe step. Returns ok | load_failed (import or crash: a rebuild may help) |
    run_failed (a kernel launch raised: a rebuild may help) | mismatch (wrong numbers: it will not)."""
    bad = "fail" if ctx.cuda else "skip"  # on CPU (--dry) a kit built for torch 2.11 + CUDA need not load
    if result is None:
        ctx.rec.row("kernels", f"{label}: probe", bad, reason=tail)
        return "load_failed"
    verdict = "ok"
    for s in result["steps"]:
        fields = {k: v for k, v in s.items() if k not in ("step", "ok")}
        if s["ok"] is None:
            ctx.rec.row("kernels", f"{label}: {s['step']}", "skip", reason=s.get("error"))
            continue
        if not s["ok"]:
            verdict = "load_failed" if s["step"].startswith("import") else "run_failed"
            ctx.rec.row("kernels", f"{label}: {s['step']}", bad, reason=s.get("error"), **fields)
            continue
        value = s.get("value")
        wrong = isinstance(value, dict) and max(value.get("out_max_rel", 0.0), value.get("grad_max_rel", 0.0)) > 5e-2
        if wrong:
            verdict = "mismatch"
        ctx.rec.row("kernels", f"{label}: {s['step']}", "fail" if wrong else "pass", **fields)
    return verdict


def section_kernels(ctx: Ctx, budget: Budget) -> None:
    """Does the kit's selective_scan_cuda stand-in load and run (in a child)? Then import mamba_ssm here."""
    result, tail = run_probe(min(120.0, budget.left()))
    verdict = record_probe(ctx, result, tail, "kit .so")
    kit = _rel(ctx.kit) if ctx.kit else "../shared/gpu-kit"
    if verdict in ("load_failed", "run_failed") and ctx.cuda:
        note = (f"selective_scan_cuda {verdict.replace('_', ' ')}; rebuild it on this machine with: "
                f"{REBUILD_CMD.format(kit=kit)}  (kit README: 3-5 min on 16 cores)")
        ctx.rec.section("kernels").setdefault("notes", []).append(note)
        print(note, flush=True)
        if ctx.args.rebuild and ctx.kit is not None:
            verdict = rebuild_and_probe(ctx, budget)
        else:
            ctx.rec.row("kernels", "rebuild", "skip", reason="not asked (--rebuild)" if ctx.kit else "no kit (--kit)",
                        command=REBUILD_CMD.format(kit=kit))
    elif verdict != "ok":
        ctx.rec.row("kernels", "rebuild", "skip", command=REBUILD_CMD.format(kit=kit),
                    reason="no CUDA: the sm_90 build needs the GPU machine" if not ctx.cuda
                    else "the kernel runs but disagrees with selective_scan_ref: a rebuild would not help")
    ensure_ssm(ctx)
    if ctx.cuda and verdict != "ok":
        ctx.kernel_verdict = "fail"


def ensure_ssm(ctx: Ctx) -> None:
    """Import mamba_ssm's selective-scan interface in this process (once), recording how it went."""
    if ctx.ssm is not None or ctx.ssm_error != "not checked yet":
        return
    try:
        from mamba_ssm.ops import selective_scan_interface

        ctx.ssm, ctx.ssm_error = selective_scan_interface, None
        ctx.rec.row("kernels", "import mamba_ssm here", "pass", version=_dist_version("mamba_ssm"))
    except (ImportError, OSError, RuntimeError) as exc:
        ctx.ssm_error = f"{type(exc).__name__}: {exc}"[:400]
        ctx.rec.row("kernels", "import mamba_ssm here", "fail" if ctx.cuda else "skip", reason=ctx.ssm_error)


def rebuild_and_probe(ctx: Ctx, budget: Budget) -> str:
    """Run the kit's build_sm90.py (bounded by the budget), point the stand-in at the new .so, probe again."""
    limit = min(REBUILD_CAP_S, ctx.deadline - time.monotonic() - 60.0)  # then a minute for the kernel numerics
    if limit < 120:
        ctx.rec.row("kernels", "rebuild", "budget", reason=f"only {limit:.0f} s could be spent; a build takes 3-5 min")
        return "load_failed"
    cmd = [sys.executable, str(ctx.kit / "ssops" / "build_sm90.py")]
    env = {**os.environ, "TORCH_CUDA_ARCH_LIST": "9.0", "MAX_JOBS": str(os.cpu_count() or 16)}
    t0 = time.monotonic()
    log = ctx.work / "rebuild.log"
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        ctx.children.append(proc)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
    tail = log.read_text()[-1500:]
    if rc != 0 or not REBUILT_SO.is_file():
        ctx.rec.row("kernels", "rebuild", "fail", wall_s=time.monotonic() - t0, rc=rc, error=tail)
        return "load_failed"
    os.environ["SELECTIVE_SCAN_OPS_SO"] = str(REBUILT_SO)  # the stand-in loads this .so instead
    ctx.rec.row("kernels", "rebuild", "pass", wall_s=time.monotonic() - t0, path=str(REBUILT_SO))
    result, tail = run_probe(min(120.0, max(10.0, budget.left())))
    return record_probe(ctx, result, tail, "rebuilt .so")


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ============================================================================ section: numerics


def scan_inputs(shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """Leaf inputs of selective_scan_fn (mamba_ssm's test distributions): u, delta, z (B, E, T) and
    B, C (B, N, T) in `dtype`; A (E, N), D, delta_bias (E,) in fp32."""
    batch, E, N, T = shape
    g = torch.Generator(device="cpu").manual_seed(seed)
    mk = {
        "u": (torch.randn(batch, E, T, generator=g), dtype),
        "delta": (0.5 * torch.rand(batch, E, T, generator=g), dtype),
        "A": (-0.5 * torch.rand(E, N, generator=g), torch.float32),
        "B": (torch.randn(batch, N, T, generator=g), dtype),
        "C": (torch.randn(batch, N, T, generator=g), dtype),
        "D": (torch.randn(E, generator=g), torch.float32),
        "z": (torch.randn(batch, E, T, generator=g), dtype),
        "delta_bias": (0.5 * torch.rand(E, generator=g), torch.float32),
    }
    return {k: t.to(device=device, dtype=dt).requires_grad_() for k, (t, dt) in mk.items()}


def upcast(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fresh fp32 leaf copies (the same values: bf16 -> fp32 is exact)."""
    return {k: v.detach().float().requires_grad_() for k, v in inputs.items()}


def seqbench_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  D: torch.Tensor, z: torch.Tensor, delta_bias: torch.Tensor) -> torch.Tensor:
    """selective_scan_fn's function (softplus Δ, D skip, SiLU(z) gate) on seqbench's reference scan.
    u, delta, z (B, E, T); B, C (B, N, T) -> (B, E, T)."""
    from seqbench.models.mamba import selective_scan

    d = F.softplus(delta + delta_bias[:, None])  # (B, E, T)
    y = selective_scan(u.transpose(1, 2), d.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2))  # (B, T, E)
    return (y.transpose(1, 2) + u * D[:, None]) * F.silu(z)


def run_scan(fn: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor], g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output and the gradient of every input under the output gradient g."""
    out = fn(**inputs)
    out.backward(g.to(out.dtype))
    return {"out": out.detach(), **{f"d{k}": v.grad for k, v in inputs.items()}}


def official_scan(ssm: Any, name: str) -> Callable[..., torch.Tensor]:
    """mamba_ssm's selective_scan_fn or selective_scan_ref with seqbench_scan's keyword interface."""
    fn = getattr(ssm, name)

    def call(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor, z: torch.Tensor, delta_bias: torch.Tensor) -> torch.Tensor:
        return fn(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=True)

    return call


def check_scan(ctx: Ctx, budget: Budget) -> None:
    """The scan alone: kernel (K), mamba_ssm's selective_scan_ref (R), seqbench's reference (S)."""
    sec = "numerics"
    if ctx.ssm is None:
        ctx.rec.row(sec, "scan: kernel / selective_scan_ref / seqbench reference", "skip",
                    reason=f"mamba_ssm not importable ({ctx.ssm_error})")
        return
    shape = ctx.shapes.scan
    g = torch.Generator(device="cpu").manual_seed(1)
    grad = torch.randn(shape[0], shape[1], shape[3], generator=g).to(ctx.device)
    ref_fn, ker_fn = official_scan(ctx.ssm, "selective_scan_ref"), official_scan(ctx.ssm, "selective_scan_fn")
    inputs = scan_inputs(shape, torch.float32, ctx.device)
    R = run_scan(ref_fn, upcast(inputs), grad)
    S = run_scan(seqbench_scan, upcast(inputs), grad)
    res = compare_all(S, R, FP32)
    ctx.rec.row(sec, f"scan fp32: seqbench reference vs selective_scan_ref {shape}", _pf(res), **_digest(res))
    why = kernels_can_run(ctx)
    if why:
        ctx.rec.row(sec, "scan: selective_scan_fn (CUDA) vs references", "skip", reason=why)
        return
    with exact_fp32():
        K = run_scan(ker_fn, inputs, grad)
    for ref_name, ref in (("selective_scan_ref", R), ("seqbench reference", S)):
        res = compare_all(K, ref, FP32)
        ctx.rec.row(sec, f"scan fp32: selective_scan_fn vs {ref_name} {shape}", _pf(res), **_digest(res))
        _gate(ctx, res)
    if not budget.allows(5):
        raise BudgetExhausted("scan bf16")
    in16 = scan_inputs(shape, torch.bfloat16, ctx.device)
    K16 = run_scan(ker_fn, in16, grad)
    R32 = run_scan(ref_fn, upcast(in16), grad)
    R16 = run_scan(ref_fn, {k: v.detach().clone().requires_grad_() for k, v in in16.items()}, grad)
    res = compare_all(K16, R32, BF16, context=R16)
    ctx.rec.row(sec, f"scan bf16: selective_scan_fn vs selective_scan_ref fp32 {shape}", _pf(res), **_digest(res))
    _gate(ctx, res)


def _pf(res: dict[str, Any]) -> str:
    return "pass" if res["passed"] else "fail"


def _digest(res: dict[str, Any]) -> dict[str, Any]:
    """The fields of a compare_all result that a row keeps (all tensors' metrics included)."""
    w = res["tensors"][res["worst"]]
    return {"tolerance": res["tolerance"], "failed": res["failed"], "worst": res["worst"],
            "max_err": w.get("tol_ratio", w.get("max_rel")), "worst_rel_l2": w.get("rel_l2"),
            "tensors": res["tensors"]}


def _gate(ctx: Ctx, res: dict[str, Any]) -> None:
    """A kernel check result: one failure marks the mamba_ssm backend failed (no suite speed for it)."""
    if not res["passed"]:
        ctx.kernel_verdict = "fail"
    elif ctx.kernel_verdict == "unchecked":
        ctx.kernel_verdict = "pass"


def speed_status(ctx: Ctx, ratio: float) -> str:
    """pass / fail against SPEED_TOLERANCE on the GPU; info under --dry (CPU timings of tiny shapes decide nothing)."""
    if ctx.dry:
        return "info"
    return "pass" if abs(ratio - 1.0) <= SPEED_TOLERANCE else "fail"


def mamba_mixer(backend: str, d_model: int, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    from seqbench import models
    from seqbench.models.mamba import MambaMixer

    torch.manual_seed(seed)
    return MambaMixer(models.make("mamba", d_model=d_model, backend=backend)).to(device=device, dtype=dtype)


def run_module(module: torch.nn.Module, u: torch.Tensor, g: torch.Tensor,
               call: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Output, input gradient and every parameter's gradient of module(u) under the output gradient g."""
    module.zero_grad(set_to_none=True)
    u = u.detach().clone()
    if u.is_floating_point():
        u.requires_grad_()
    out = module(u) if call is None else call(module, u)
    out.backward(g.to(out.dtype))
    grads = {f"d{n}": p.grad for n, p in module.named_parameters()}
    return {"out": out.detach(), **({"du": u.grad} if u.is_floating_point() else {}), **grads}


def check_block(ctx: Ctx, budget: Budget) -> None:
    """MambaMixer backend mamba_ssm vs reference on one state_dict, forward and every gradient."""
    sec = "numerics"
    why = kernels_can_run(ctx)
    if why:
        ctx.rec.row(sec, "block: MambaMixer mamba_ssm vs reference", "skip", reason=why)
        return
    D, T = ctx.shapes.block_d_model, ctx.shapes.block_len
    g = torch.Generator(device="cpu").manual_seed(2)
    u, grad = torch.randn(2, T, D, generator=g).to(ctx.device), torch.randn(2, T, D, generator=g).to(ctx.device)
    ref = mamba_mixer("reference", D, ctx.device, torch.float32)
    ker = mamba_mixer("mamba_ssm", D, ctx.device, torch.float32, seed=1)
    ker.load_state_dict(ref.state_dict())
    with exact_fp32():
        R, K = run_module(ref, u, grad), run_module(ker, u, grad)
    res = compare_all(K, R, FP32)
    ctx.rec.row(sec, f"block fp32: mamba_ssm vs reference (B=2, T={T}, d_model={D})", _pf(res), impl=ker.impl,
                **_digest(res))
    _gate(ctx, res)
    if not budget.allows(5):
        raise BudgetExhausted("block bf16")
    sd16 = {k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()}
    ref.load_state_dict({k: v.float() for k, v in sd16.items()})  # fp32 reference on the bf16-rounded weights
    ker16 = mamba_mixer("mamba_ssm", D, ctx.device, torch.bfloat16)
    ker16.load_state_dict(sd16)
    ref16 = mamba_mixer("reference", D, ctx.device, torch.bfloat16)
    ref16.load_state_dict(sd16)
    u16, g16 = u.to(torch.bfloat16), grad.to(torch.bfloat16)
    with exact_fp32():
        R32 = run_module(ref, u16.float(), g16.float())
    K16, R16 = run_module(ker16, u16, g16), run_module(ref16, u16, g16)
    res = compare_all(K16, R32, BF16, context=R16)
    ctx.rec.row(sec, f"block bf16: mamba_ssm vs fp32 reference (B=2, T={T}, d_model={D})", _pf(res), **_digest(res))
    _gate(ctx, res)


def config_choices(family: str, key: str) -> tuple[str, ...]:
    """The Literal choices of a family's config field `key` (() when it has none)."""
    from seqbench import models

    try:
        hints = typing.get_type_hints(models.config_class(family), include_extras=True)
    except Exception:  # noqa: BLE001 — an unresolvable annotation: treat as "no choices"
        return ()
    hint = hints.get(key)
    while typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return tuple(typing.get_args(hint)) if typing.get_origin(hint) is typing.Literal else ()


def step_variants(ctx: Ctx) -> list[tuple[str, str, dict[str, Any]]]:
    """(family, label, config) for the step == forward check: each `kind` of a family; backends:
    mamba on reference and (when it can run) mamba_ssm; Triton backends of other families are left
    to the `modern` section (their compile would eat this section's budget)."""
    from seqbench import models

    out = []
    for family in models.names():
        kinds = config_choices(family, "kind") or (None,)
        backends = config_choices(family, "backend")
        use = ["reference"] if backends else [None]
        if family == "mamba" and kernels_can_run(ctx) is None:
            use.append("mamba_ssm")
        for kind in kinds:
            for backend in use:
                cfg = {"d_model": 64, "n_layers": 2}
                if kind is not None:
                    cfg["kind"] = kind
                if backend is not None:
                    cfg["backend"] = backend
                label = family + (f"[{kind}]" if kind else "") + (f" {backend}" if backend else "")
                out.append((family, label, cfg))
    return out


def check_step_equals_forward(ctx: Ctx, budget: Budget) -> None:
    """step() over a sequence == forward() on it, for every streamable family, on this device (fp32, TF32 off)."""
    from seqbench import models

    sec, T = "numerics", ctx.shapes.step_len
    for family, label, cfg in step_variants(ctx):
        if not budget.allows(3):
            ctx.rec.row(sec, f"step == forward: {label}", "budget", reason="section budget exhausted")
            continue
        try:
            torch.manual_seed(0)
            model = models.build(family, **cfg).to(ctx.device).eval()
        except Exception as exc:  # noqa: BLE001 — a family that does not build at these sizes is reported
            ctx.rec.row(sec, f"step == forward: {label}", "skip", reason=f"does not build: {type(exc).__name__}: {exc}"[:300])
            continue
        if not model.streamable:
            ctx.rec.row(sec, f"step == forward: {label}", "skip", reason="not streamable")
            continue
        x = torch.randint(0, model.config.vocab_size, (2, T), generator=torch.Generator().manual_seed(1)).to(ctx.device)
        try:
            with torch.no_grad(), exact_fp32():
                full = model(x)  # (B, T, C)
                state = model.init_state(2, T)
                steps = []
                for t in range(T):
                    y_t, state = model.step(x[:, t], state)
                    steps.append(y_t)
            stepped = torch.stack(steps, dim=1)
            err, scale = float((stepped - full).abs().max()), float(full.abs().max())
            ok = math.isfinite(err) and err <= STEP_RTOL * max(scale, 1.0)
            ctx.rec.row(sec, f"step == forward: {label}", "pass" if ok else "fail", impl=model.impl, max_err=err,
                        scale=scale, tolerance=f"{STEP_RTOL} * max(scale, 1)", T=T)
        except Exception as exc:  # noqa: BLE001
            ctx.rec.row(sec, f"step == forward: {label}", "error", error=f"{type(exc).__name__}: {exc}"[:400])


def section_numerics(ctx: Ctx, budget: Budget) -> None:
    for name, check in (("scan", check_scan), ("block", check_block), ("step", check_step_equals_forward)):
        if not budget.allows(3):
            ctx.rec.row("numerics", name, "budget", reason="section budget exhausted")
            continue
        try:
            with exact_fp32():  # the references too (selective_scan_ref's einsums are matmuls)
                check(ctx, budget)
        except BudgetExhausted as exc:
            ctx.rec.row("numerics", f"{name}: {exc}", "budget", reason="section budget exhausted")
        except Exception as exc:  # noqa: BLE001 — one check's crash must not cost the others
            ctx.rec.row("numerics", name, "error", error=_exc_text(exc))
            if name != "step":
                ctx.kernel_verdict = "fail" if kernels_can_run(ctx) is None else ctx.kernel_verdict
    ctx.rec.section("numerics")["kernel_verdict"] = ctx.kernel_verdict


def _exc_text(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}"[:500] + where


# ============================================================================ section: mamba_block


def interleaved_ratio(a: Callable[[], float], b: Callable[[], float], rounds: int) -> dict[str, Any]:
    """Measure a and b `rounds` times, alternating which goes first (a drift in the machine then shows
    as spread, not bias); the median over rounds of a/b, and the raw values."""
    pairs = []
    for r in range(rounds):
        if r % 2 == 0:
            va = a()
            vb = b()
        else:
            vb = b()
            va = a()
        pairs.append((va, vb))
    ratios = sorted(va / vb for va, vb in pairs)
    mid = len(ratios) // 2
    ratio = ratios[mid] if len(ratios) % 2 else 0.5 * (ratios[mid - 1] + ratios[mid])
    return {"ratio": ratio, "a": [p[0] for p in pairs], "b": [p[1] for p in pairs]}


def block_ms(m: torch.nn.Module, u: torch.Tensor, gy: torch.Tensor, mode: str, device: torch.device) -> tuple[float, str]:
    """(median ms, timer) of one forward (no grad) or forward+backward of block m on u (B, T, D)."""
    if mode == "forward":
        def fwd() -> None:
            with torch.no_grad():
                m(u)

        return bench_ms(fwd, device, rep_ms=200)
    return bench_ms(lambda: m(u).backward(gy), device, rep_ms=300, grad_to_none=[u, *m.parameters()])


def section_mamba_block(ctx: Ctx, budget: Budget) -> None:
    """Our Mamba block on mamba_ssm vs mamba_simple.Mamba with the same state_dict: outputs, then time."""
    sec = "mamba_block"
    why = kernels_can_run(ctx)
    if why:
        ctx.rec.row(sec, "seqbench Mamba block vs mamba_simple.Mamba", "skip", reason=why)
        return
    if ctx.kernel_verdict == "fail":
        ctx.rec.row(sec, "seqbench Mamba block vs mamba_simple.Mamba", "skip",
                    reason="the kernel failed its numerics: no speed is reported for it")
        return
    from mamba_ssm.modules.mamba_simple import Mamba as OfficialMamba

    batch, T, D = ctx.shapes.bench
    for dtype in (torch.bfloat16, torch.float32):
        if not budget.allows(8):
            ctx.rec.row(sec, f"fwd+bwd {dtype_name(dtype)}", "budget", reason="section budget exhausted")
            continue
        ours = mamba_mixer("mamba_ssm", D, ctx.device, dtype)
        theirs = OfficialMamba(d_model=D, d_state=ours.d_state, d_conv=ours.d_conv, expand=ours.d_inner // D)
        loaded = theirs.load_state_dict(ours.state_dict(), strict=True)
        theirs = theirs.to(device=ctx.device, dtype=dtype)
        g = torch.Generator(device="cpu").manual_seed(3)
        u = torch.randn(batch, T, D, generator=g).to(device=ctx.device, dtype=dtype).requires_grad_()
        gy = torch.randn(batch, T, D, generator=g).to(device=ctx.device, dtype=dtype)
        with torch.no_grad(), exact_fp32():
            res = compare(ours(u), theirs(u), FP32 if dtype == torch.float32 else BF16)
        ctx.rec.row(sec, f"outputs {dtype_name(dtype)}: seqbench vs mamba_simple (B={batch}, T={T}, d_model={D})",
                    _pf(res), load_state_dict=str(loaded), **{k: v for k, v in res.items() if k != "passed"})
        for mode in ("forward+backward", "forward"):
            timers: set[str] = set()

            def run(m: torch.nn.Module, mode: str = mode, timers: set[str] = timers, u: torch.Tensor = u,
                    gy: torch.Tensor = gy) -> float:
                ms, timer = block_ms(m, u, gy, mode, ctx.device)
                timers.add(timer)
                return ms

            res = interleaved_ratio(lambda m=ours: run(m), lambda m=theirs: run(m), rounds=3)
            ctx.rec.row(sec, f"{mode} time {dtype_name(dtype)}: seqbench / mamba_simple", speed_status(ctx, res["ratio"]),
                        ratio=res["ratio"], seqbench_ms=res["a"], mamba_simple_ms=res["b"], timer=", ".join(timers),
                        goal=f"|ratio - 1| <= {SPEED_TOLERANCE}")
        del ours, theirs


# ============================================================================ section: fidelity


FIDELITY_MODELS = {
    "lstm": {"family": "lstm"},
    "transformer": {"family": "transformer", "n_heads": 8, "positions": "rope"},
    "mamba": {"family": "mamba"},
}


def model_config(ctx: Ctx, name: str, spec: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A model entry's config with the backend the checks allow (mamba: mamba_ssm only when it passed)."""
    cfg = {**base, **{k: v for k, v in spec.items() if k != "family"}}
    if spec["family"] == "mamba":
        cfg["backend"] = mamba_backend(ctx)
    if ctx.dry and spec["family"] == "transformer":
        cfg["n_heads"] = 2
    return cfg


def mamba_backend(ctx: Ctx) -> str:
    """mamba's backend in the fidelity and suite sections: mamba_ssm when it runs here and did not fail
    a check (or as --mamba-backend forces)."""
    if ctx.args.mamba_backend != "checked":
        return ctx.args.mamba_backend
    return "mamba_ssm" if kernels_can_run(ctx) is None and ctx.kernel_verdict != "fail" else "reference"


def harness_context(ctx: Ctx, name: str, family: str, cfg: dict[str, Any], dtype: torch.dtype, mode: str,
                    batch_size: int, seq_len: int) -> Any:
    from seqbench import models
    from seqbench.bench.measures import MEASURES, MeasureContext
    from seqbench.bench.run.matrix import Cell

    settings: dict[str, Any] = {"modes": [mode]}
    if ctx.dry:  # CPU, tiny: no quiet guard (it learns for a second per process), fewer and shorter samples
        settings.update(guard=0.0, warmup=1, repeats=3, min_time_s=0.002)
    cell = Cell(model=name, family=family, model_config=cfg, task=None, task_kind=None, task_params={},
                measure="throughput", settings=settings, batch_size=batch_size, seq_len=seq_len,
                device=str(ctx.device), dtype=dtype_name(dtype))

    def build() -> Any:
        torch.manual_seed(0)
        return models.build(family, **cfg).to(device=ctx.device, dtype=dtype)

    return MeasureContext(cell=cell, build_model=build, task=None, device=ctx.device, dtype=dtype,
                          settings=MEASURES["throughput"].make_settings(settings))


def section_fidelity(ctx: Ctx, budget: Budget) -> None:
    """tokens/s of seqbench's throughput measure vs do_bench on the same workload."""
    batch, T = ctx.shapes.fidelity
    dtypes = (torch.float32,) if ctx.dry else (torch.bfloat16, torch.float32)  # CPU bf16 is emulated: slow
    for name, spec in FIDELITY_MODELS.items():
        cfg = model_config(ctx, name, spec, ctx.shapes.fidelity_model)
        for dtype in dtypes:
            for mode in ("inference", "training"):
                label = f"{name} {dtype_name(dtype)} {mode} (B={batch}, T={T})"
                if not budget.allows(6):
                    ctx.rec.row("fidelity", label, "budget", reason="section budget exhausted")
                    continue
                try:
                    fidelity_one(ctx, label, name, spec["family"], cfg, dtype, mode)
                except Exception as exc:  # noqa: BLE001 — one workload's failure must not cost the others
                    ctx.rec.row("fidelity", label, "error", error=_exc_text(exc))


def fidelity_one(ctx: Ctx, label: str, name: str, family: str, cfg: dict[str, Any], dtype: torch.dtype,
                 mode: str) -> None:
    """One workload: the harness's tokens/s and do_bench's, interleaved, and their ratio."""
    from seqbench.bench.measures import MEASURES
    from seqbench.bench.measures.train import random_batch, workload_fn

    batch, T = ctx.shapes.fidelity
    hctx = harness_context(ctx, name, family, cfg, dtype, mode, batch, T)
    model = hctx.build_model()
    fn = workload_fn(model, mode, random_batch(model, batch, T, ctx.device, seed=0))
    t = one_call_s(fn, ctx.device, warmup=3)
    rep_ms = 20.0 if ctx.dry else min(1500.0, max(100.0, 15e3 * t))  # at least ~15 calls
    warmup_ms = 5.0 if ctx.dry else max(25.0, 3e3 * t)

    def harness() -> float:
        rows = MEASURES["throughput"].fn(hctx)
        return next(r["value"] for r in rows if r["metric"] == "tokens_per_s")

    def reference() -> float:
        ms, _ = bench_ms(fn, ctx.device, rep_ms=rep_ms, warmup_ms=warmup_ms)
        return batch * T / (ms / 1e3)

    res = interleaved_ratio(harness, reference, rounds=1 if ctx.dry else 2)  # harness / do_bench tokens/s
    ctx.rec.row("fidelity", label, speed_status(ctx, res["ratio"]), ratio=res["ratio"], impl=model.impl,
                harness_tokens_per_s=res["a"], do_bench_tokens_per_s=res["b"],
                timer="do_bench" if ctx.cuda else "perf_counter (dry)", goal=f"|ratio - 1| <= {SPEED_TOLERANCE}")
    if family == "transformer" and mode == "inference":
        record_attention_kernels(ctx, model, fn, dtype)


def record_attention_kernels(ctx: Ctx, model: Any, fn: Callable[[], Any], dtype: torch.dtype) -> None:
    """The SDPA backend that ran: the model's own record (torch's dispatch choice) and, on CUDA, the
    attention kernels the profiler saw in one forward."""
    impl = model.blocks[0].mixer.impl
    names: list[str] = []
    if ctx.cuda:
        try:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                synchronize(ctx.device)
            keys = ("flash", "fmha", "attention", "attn", "cudnn", "efficient", "softmax", "sdpa")
            names = sorted({e.key for e in prof.key_averages() if any(k in e.key.lower() for k in keys)})[:8]
        except Exception as exc:  # noqa: BLE001 — the profiler is a second opinion only
            names = [f"profiler failed: {type(exc).__name__}: {exc}"[:200]]
    ctx.rec.row("fidelity", f"transformer {dtype_name(dtype)}: SDPA backend", "info", impl=impl, kernels=names)


# ============================================================================ section: suite


def load_suite_dict(ctx: Ctx) -> dict[str, Any]:
    """bench/suites/h200.yaml, with mamba's backend fixed by the checks (and tiny sizes under --dry)."""
    import yaml

    suite = yaml.safe_load(SUITE_FILE.read_text())
    suite["models"]["mamba"]["backend"] = mamba_backend(ctx)
    if ctx.dry:
        suite.update(device="cpu", dtype=["float32"], timeout_s=60, threads=1,
                     defaults={"d_model": 32, "n_layers": 1},
                     shapes={"batch_size": [2], "seq_len": [64, 256]})
        suite["models"]["transformer"]["n_heads"] = 2
        suite["measures"]["throughput"] = {"warmup": 1, "repeats": 3, "min_time_s": 0.005, "guard": 0.0}
        suite["measures"]["latency"] = {**suite["measures"].get("latency", {}), "warmup": 2, "guard": 0.0}
        suite["exclude"] = [{"measure": "latency", "seq_len": [64]}]
    return suite


@dataclass
class CostModel:
    """Seconds a cell of the suite should take, from per-call times measured at two lengths."""

    call_s: dict[tuple[str, str, str, int], float]  # (model, dtype, mode, seq_len) -> s per call
    step_s: dict[tuple[str, str], float]  # (model, dtype) -> s per streamed token
    build_s: float = 0.3  # building a model and moving it to the device

    def call(self, model: str, dtype: str, mode: str, seq_len: int) -> float:
        """Measured, or extrapolated from the two longest measured lengths by their power law."""
        known = sorted(T for (m, d, md, T) in self.call_s if (m, d, md) == (model, dtype, mode))
        if seq_len in known:
            return self.call_s[(model, dtype, mode, seq_len)]
        if not known:
            return math.inf
        if len(known) == 1:
            return self.call_s[(model, dtype, mode, known[0])] * seq_len / known[0]
        t1, t2 = (self.call_s[(model, dtype, mode, T)] for T in known[-2:])
        slope = max(1.0, math.log(max(t2, 1e-9) / max(t1, 1e-9)) / math.log(known[-1] / known[-2]))
        return t2 * (seq_len / known[-1]) ** min(slope, 2.0)

    def cell(self, cell: Any) -> float:
        s = cell.settings
        if cell.measure == "throughput":
            total = 0.0
            for mode in s.get("modes", ("inference", "training")):
                t = self.call(cell.model, cell.dtype, mode, cell.seq_len)
                inner = max(1, math.ceil(s.get("min_time_s", 0.01) / max(t, 1e-9)))
                total += self.build_s + (s.get("warmup", 3) + 1 + s.get("repeats", 10) * inner) * t
            return total
        if cell.measure == "memory":
            modes = s.get("modes", ("inference", "training"))
            return sum(self.build_s + 2 * self.call(cell.model, cell.dtype, m, cell.seq_len) for m in modes)
        if cell.measure == "latency":
            step = self.step_s.get((cell.model, cell.dtype), math.inf)
            return self.build_s + (s.get("warmup", 8) + s.get("repeats", 1) * cell.seq_len) * step * 1.2
        return self.build_s + 0.2  # static


def timing_pass(ctx: Ctx, suite: dict[str, Any], budget: Budget) -> CostModel:
    """Per-call time of every model x dtype x mode at the probe lengths, and per-token step time."""
    from seqbench import models
    from seqbench.bench.measures.latency import stream_step_times
    from seqbench.bench.measures.train import random_batch, workload_fn

    device = torch.device(suite["device"] if suite["device"] != "auto" else ctx.device.type)
    batch = suite["shapes"]["batch_size"][0]
    call_s, step_s = {}, {}
    for name, spec in suite["models"].items():
        cfg = {**suite.get("defaults", {}), **{k: v for k, v in spec.items() if k not in ("family", "measures")}}
        for dtype in suite["dtype"]:
            for T in ctx.shapes.probe_lens:
                for mode in ("inference", "training"):
                    if not budget.allows(5):
                        raise BudgetExhausted("timing pass")
                    torch.manual_seed(0)
                    model = models.build(spec["family"], **cfg).to(device=device, dtype=dtype_of(dtype))
                    fn = workload_fn(model, mode, random_batch(model, batch, T, device))
                    call_s[(name, dtype, mode, T)] = one_call_s(fn, device)
                    del fn, model
            torch.manual_seed(0)
            model = models.build(spec["family"], **cfg).to(device=device, dtype=dtype_of(dtype)).eval()
            if model.streamable:
                x = random_batch(model, 1, 40, device).inputs
                with torch.no_grad():
                    stream_step_times(model, x[:, :8], 0, device)  # warm-up
                    times = stream_step_times(model, x, 0, device)[1]
                step_s[(name, dtype)] = sorted(times)[len(times) // 2]
            del model
    return CostModel(call_s, step_s)


def plan_suite(ctx: Ctx, suite: dict[str, Any], cost: CostModel, target_s: float, path: Path) -> dict[str, Any]:
    """Fit the suite into target_s: fewer throughput repeats first, then drop the costliest cells
    (fp32 before bf16) as `exclude` entries. Writes the planned suite to `path`; returns the plan."""
    import yaml

    from seqbench.bench.run.config import load_suite
    from seqbench.bench.run.matrix import expand

    fixed = 5.0 if ctx.dry else 20.0  # the worker's start (torch, CUDA context, imports) and env.json

    def cells() -> list[tuple[float, Any]]:
        path.write_text(yaml.safe_dump(suite, sort_keys=False))
        return [(cost.cell(c), c) for c in expand(load_suite(path), suite["device"])]

    costs = cells()
    first = fixed + sum(c for c, _ in costs)
    if first > target_s and suite["measures"]["throughput"].get("repeats", 10) > 3:
        suite["measures"]["throughput"]["repeats"] = 3
        costs = cells()
    dropped: list[dict[str, Any]] = []
    costs.sort(key=lambda cc: (cc[1].dtype != "float32", -cc[0]))  # the first to go: costly fp32 cells
    while fixed + sum(c for c, _ in costs) > target_s and len(costs) > 1:  # the run keeps at least one cell
        c_s, c = costs.pop(0)
        entry = {"model": c.model, "measure": c.measure, "dtype": c.dtype, "seq_len": c.seq_len}
        suite.setdefault("exclude", []).append(entry)
        dropped.append({**entry, "estimate_s": round(c_s, 1)})
    planned = cells()  # the written suite, loaded and expanded again: what the run will do
    assert len(planned) == len(costs), (len(planned), len(costs))
    total = fixed + sum(c for c, _ in planned)
    return {"target_s": round(target_s, 1), "first_estimate_s": round(first, 1), "estimate_s": round(total, 1),
            "cells": len(planned), "throughput_repeats": suite["measures"]["throughput"].get("repeats"),
            "dropped": dropped, "mamba_backend": suite["models"]["mamba"].get("backend"),
            "cell_estimates": sorted(({"cell": c.label, "s": round(s, 2)} for s, c in planned),
                                     key=lambda d: -d["s"])[:12],
            "call_s": {f"{m} {d} {md} T={T}": round(v, 5) for (m, d, md, T), v in cost.call_s.items()},
            "step_ms": {f"{m} {d}": round(v * 1e3, 4) for (m, d), v in cost.step_s.items()}}


def section_suite(ctx: Ctx, budget: Budget) -> None:
    """Plan the h200 suite from a timing pass, run it with the real harness in a child, summarize, pack."""
    sec = "suite"
    ensure_ssm(ctx)  # when the kernels section was not selected: mamba's backend still follows the import
    suite = load_suite_dict(ctx)
    run_dir = Path(ctx.args.suite_out) if ctx.args.suite_out else ctx.work / "h200"
    resuming = (run_dir / "results.jsonl").is_file() and (run_dir / "results.jsonl").stat().st_size > 0
    if run_dir.exists() and (ctx.args.fresh_suite or not resuming):
        shutil.rmtree(run_dir)  # nothing to keep: the child starts it afresh from the planned suite
        resuming = False
    planned = ctx.work / "h200-planned.yaml"
    if not resuming and budget.left() < (20 if ctx.dry else 60):
        ctx.rec.row(sec, "plan", "budget", reason=f"{budget.left():.0f} s left: too little for the timing pass and a run")
        return
    if resuming:
        ctx.rec.row(sec, "plan", "info", note=f"{run_dir} holds results: resuming it with its own suite.yaml "
                                              "(--fresh-suite starts over)")
    else:
        t0 = time.monotonic()
        cost = timing_pass(ctx, suite, budget)
        target = min(SECTION_CAP["suite"][1 if ctx.dry else 0], budget.left()) - 10.0
        plan = plan_suite(ctx, suite, cost, target, planned)
        ctx.rec.row(sec, "plan", "info", plan=plan, estimate_s=plan["estimate_s"], target_s=plan["target_s"],
                    dropped=len(plan["dropped"]), timing_pass_s=round(time.monotonic() - t0, 1),
                    mamba_backend=plan["mamba_backend"])
        ctx.rec.section(sec)["plan"] = plan
    if ctx.cuda:
        torch.cuda.empty_cache()  # the run's worker gets the GPU's memory
    cmd = [sys.executable, str(Path(__file__).resolve()), "--internal-run-suite", str(planned),
           "--suite-out", str(run_dir), "--device", suite["device"]]
    rc, wall, tail = run_child(ctx, cmd, budget.left() - 5.0, ctx.work / "suite-child.log")
    summarize_suite(ctx, run_dir, rc, wall, tail)
    pack_run_dir(ctx, run_dir)


def run_child(ctx: Ctx, cmd: list[str], limit_s: float, log: Path) -> tuple[int | None, float, str]:
    """Run cmd in its own process group until it exits or limit_s passes; then SIGINT (the runner keeps
    finished cells), and SIGKILL after 20 s. Returns (exit code or None, wall seconds, output tail)."""
    t0 = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        ctx.children.append(proc)
        try:
            rc: int | None = proc.wait(timeout=max(1.0, limit_s))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
            rc = None
    text = log.read_text(errors="replace")
    print(text[-3000:], flush=True)
    return rc, time.monotonic() - t0, text[-2000:]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


LATENCY_POSITIONS = (1024, 16384)


def summarize_suite(ctx: Ctx, run_dir: Path, rc: int | None, wall: float, tail: str) -> None:
    """Rows and a markdown table of the run: tokens/s, peak memory, per-token latency near positions 1k, 16k."""
    from seqbench.bench.results.io import read_plan, read_rows

    sec = "suite"
    rows = read_rows(run_dir / "results.jsonl")
    plan = read_plan(run_dir) or []
    done = {r["cell_id"] for r in rows}
    statuses: dict[str, int] = {}
    for r in {r["cell_id"]: r for r in rows}.values():
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    missing = len([c for c in plan if c["cell_id"] not in done])
    if rc is None:
        status = "budget"  # stopped at the deadline: the finished cells are kept, --resume runs the rest
    else:
        status = "pass" if rc == 0 and missing == 0 and set(statuses) <= {"ok", "skipped"} else "fail"
    ctx.rec.row(sec, "run", status, rc=rc, wall_s=round(wall, 1), cells_planned=len(plan), cells_done=len(done),
                missing=missing, statuses=statuses, run_dir=str(run_dir),
                reason=None if rc is not None else "stopped at the section deadline: a rerun of this script "
                                                   "on the same machine resumes the run directory",
                error=tail[-600:] if status == "fail" else None)
    table: dict[tuple[str, str, int], dict[str, Any]] = {}
    lat: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r["status"] != "ok":
            continue
        key = (r["model"], r["dtype"], r["seq_len"])
        if r["metric"] in ("tokens_per_s", "peak_bytes") and r.get("mode"):
            table.setdefault(key, {"impl": r.get("impl")})[f"{r['metric']} {r['mode']}"] = r["value"]
        if r["metric"] == "latency_p50_ms" and r.get("samples"):
            ms = r["samples"]
            entry = {"p50_ms": r["value"], "seq_len": r["seq_len"], "impl": r.get("impl")}
            for p in positions_for(r["seq_len"], ctx.dry):
                window = ms[max(0, p - max(1, p // 16)):p]
                entry[f"ms_at_{p}"] = sorted(window)[len(window) // 2] if window else None
            lat[(r["model"], r["dtype"])] = entry
    md = ["| model | dtype | seq_len | impl | inference tokens/s | training tokens/s | peak inference | peak training |",
          "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for (m, d, T), v in sorted(table.items()):
        md.append(f"| {m} | {d} | {T} | {v.get('impl')} | {_num(v.get('tokens_per_s inference'))} | "
                  f"{_num(v.get('tokens_per_s training'))} | {_mib(v.get('peak_bytes inference'))} | "
                  f"{_mib(v.get('peak_bytes training'))} |")
    md += ["", "| model | dtype | impl | latency p50 ms | ms near each position (median of the 1/16 before it) |",
           "| --- | --- | --- | ---: | --- |"]
    for (m, d), v in sorted(lat.items()):
        at = ", ".join(f"{k.removeprefix('ms_at_')}: {_num(x, 4)}" for k, x in v.items() if k.startswith("ms_at_"))
        md.append(f"| {m} | {d} | {v.get('impl')} | {_num(v['p50_ms'], 4)} | {at} |")
    ctx.rec.section(sec)["table"] = md
    ctx.rec.row(sec, "results", "info", tokens_and_memory={f"{m} {d} T={T}": v for (m, d, T), v in table.items()},
                latency={f"{m} {d}": v for (m, d), v in lat.items()})


def positions_for(seq_len: int, dry: bool) -> list[int]:
    positions = (64, 256) if dry else LATENCY_POSITIONS
    return [p for p in positions if p <= seq_len]


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def _mib(x: float | None) -> str:
    return "—" if x is None else f"{x / 2**20:.1f} MiB"


def pack_run_dir(ctx: Ctx, run_dir: Path) -> None:
    """OUT/h200-run.tar.gz: the run directory as one file (the device tool returns at most 8 files)."""
    if not run_dir.is_dir():
        return
    target = ctx.rec.out / "h200-run.tar.gz"
    with tarfile.open(target, "w:gz") as tar:
        for p in sorted(run_dir.iterdir()):
            if p.name in ("results.jsonl", "env.json", "suite.yaml", "cells.jsonl", "results.quarantine.jsonl"):
                tar.add(p, arcname=f"h200/{p.name}")
    ctx.rec.row("suite", "packed", "info", path=str(target), bytes=target.stat().st_size,
                note="tar xzf h200-run.tar.gz -C results/reference && seqbench report results/reference/h200")


def internal_run_suite(args: argparse.Namespace) -> int:
    """The child of the suite section: seqbench's runner (as `seqbench run`, without the report)."""
    from seqbench.bench.run.runner import execute, prepare

    run_dir = Path(args.suite_out)
    resume = run_dir if (run_dir / "suite.yaml").is_file() else None
    suite, run_dir = prepare(None if resume else args.internal_run_suite, None if resume else run_dir, [],
                             args.device, resume)
    result = execute(suite, run_dir, parallel=1)
    print(f"suite: {result.cells} cells, {result.skipped_done} already done, {len(result.rows)} rows, "
          f"{len(result.failed)} failed rows, interrupted={result.interrupted}", flush=True)
    return 130 if result.interrupted else (1 if result.failed else 0)


# ============================================================================ section: modern


MODERN_FAMILIES = ("mamba2", "linear_attention")  # expected; any family with a kernel backend is checked
OFFICIAL_LAYERS = ("mamba2", "linear_attention")  # families official_module() maps to an upstream layer


def modern_families() -> list[str]:
    """Registered families (mamba aside: sections numerics and mamba_block) with a kernel backend."""
    from seqbench import models

    return [f for f in models.names() if f != "mamba"
            and any(b not in ("auto", "reference") for b in config_choices(f, "backend"))]


def section_modern(ctx: Ctx, budget: Budget) -> None:
    """In a child process (Triton compiles cannot be interrupted): see modern_checks."""
    present = modern_families()
    for f in MODERN_FAMILIES:
        if f not in present:
            ctx.rec.row("modern", f, "skip", reason=f"family {f!r} is not registered (seqbench.models.names()) "
                                                    "or has no kernel backend")
    if not present:
        return
    if budget.left() < 45 and not ctx.dry:
        ctx.rec.row("modern", "all", "budget", reason=f"{budget.left():.0f} s left; the first Triton compile "
                                                      "and autotune alone take about a minute per kernel family")
        return
    n_before = len(ctx.rec.rows_path.read_text().splitlines())
    cmd = [sys.executable, str(Path(__file__).resolve()), "--internal-section", "modern", "--out", str(ctx.rec.out),
           "--work", str(ctx.work), "--child-deadline", str(time.time() + budget.left() - 5.0),
           "--child-elapsed", str(time.monotonic() - ctx.rec.t0)]
    if ctx.dry:
        cmd.append("--dry")
    rc, wall, tail = run_child(ctx, cmd, budget.left() - 3.0, ctx.work / "modern-child.log")
    lines = ctx.rec.rows_path.read_text().splitlines()[n_before:]
    ctx.rec.section("modern")["rows"].extend(r for r in map(json.loads, filter(str.strip, lines))
                                             if r["section"] == "modern")
    if rc != 0:
        ctx.rec.row("modern", "child", "budget" if rc is None else "error", rc=rc, wall_s=round(wall, 1),
                    reason="killed at the section deadline" if rc is None else tail[-600:])


def modern_checks(ctx: Ctx, budget: Budget) -> None:
    """Per registered modern family, kind and kernel backend: numerics vs the reference backend (model
    level, one state_dict), the official module on the same weights, and forward+backward time."""
    for family in modern_families():
        kernels = [b for b in config_choices(family, "backend") if b not in ("auto", "reference")]
        for kind in config_choices(family, "kind") or (None,):
            for backend in kernels:
                label = family + (f"[{kind}]" if kind else "") + f" {backend}"
                if not budget.allows(10):
                    ctx.rec.row("modern", label, "budget", reason="section budget exhausted")
                    continue
                try:
                    modern_one(ctx, budget, family, kind, backend, label)
                except BudgetExhausted as exc:
                    ctx.rec.row("modern", f"{label}: {exc}", "budget", reason="section budget exhausted")
                except Exception as exc:  # noqa: BLE001
                    ctx.rec.row("modern", label, "error", error=_exc_text(exc))


def modern_one(ctx: Ctx, budget: Budget, family: str, kind: str | None, backend: str, label: str) -> None:
    from seqbench import models

    batch, T, D = ctx.shapes.modern
    cfg = {"d_model": D, "n_layers": 1} | ({"kind": kind} if kind else {})
    try:
        torch.manual_seed(0)
        ker = models.build(family, **cfg, backend=backend)
    except Exception as exc:  # noqa: BLE001 — the backend's guard says why it cannot run
        ctx.rec.row("modern", label, "skip", reason=f"{type(exc).__name__}: {exc}"[:400])
        return
    if not ctx.cuda:
        ctx.rec.row("modern", label, "skip", reason=f"no CUDA: backend {backend!r} runs Triton kernels on CUDA only")
        return
    torch.manual_seed(0)
    ref = models.build(family, **cfg, backend="reference").to(ctx.device)
    ker = ker.to(ctx.device)
    ker.load_state_dict(ref.state_dict())
    g = torch.Generator(device="cpu").manual_seed(4)
    x = torch.randint(0, ref.config.vocab_size, (batch, T), generator=g).to(ctx.device)
    gy = torch.randn(batch, T, ref.config.n_outputs, generator=g).to(ctx.device)

    def call(m: torch.nn.Module, _: torch.Tensor) -> torch.Tensor:
        return m(x)

    with exact_fp32():
        R = run_module(ref, x, gy, call)
        K = run_module(ker, x, gy, call)
    res = compare_all(K, R, TRITON_FP32)
    ctx.rec.row("modern", f"{label} fp32 vs reference (model, B={batch}, T={T}, d_model={D})", _pf(res),
                impl=ker.impl, **_digest(res))
    if not budget.allows(10):
        raise BudgetExhausted("bf16")
    sd16 = {k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()}
    ref.load_state_dict({k: v.float() for k, v in sd16.items()})
    ker16 = ker.to(torch.bfloat16)
    ker16.load_state_dict(sd16)
    with exact_fp32():
        R32 = run_module(ref, x, gy, call)
    K16 = run_module(ker16, x, gy.to(torch.bfloat16), call)
    res16 = compare_all(K16, R32, BF16)
    ctx.rec.row("modern", f"{label} bf16 vs fp32 reference", _pf(res16), **_digest(res16))
    if not (res["passed"] and res16["passed"]):
        ctx.rec.row("modern", f"{label} timing", "skip", reason="failed its numerics: no speed is reported for it")
        return
    if not budget.allows(15):
        raise BudgetExhausted("timing")
    if family not in OFFICIAL_LAYERS:
        ctx.rec.row("modern", f"{label} vs official layer", "skip", reason="no upstream layer mapped for this family")
        return
    official_and_timing(ctx, family, kind, backend, label)


def official_module(family: str, mixer: Any) -> torch.nn.Module:
    """The upstream layer our mixer's parameter layout follows (see models/mamba2.py, linear_attention.py)."""
    if family == "mamba2":
        from mamba_ssm.modules.mamba2 import Mamba2

        return Mamba2(d_model=mixer.in_proj.in_features, d_state=mixer.d_state, d_conv=mixer.d_conv,
                      expand=mixer.d_inner // mixer.in_proj.in_features, headdim=mixer.head_dim,
                      ngroups=mixer.n_groups, chunk_size=mixer.chunk_size, use_mem_eff_path=False)
    D = mixer.q_proj.in_features
    common = {"hidden_size": D, "expand_k": mixer.key_dim / D, "expand_v": mixer.value_dim / D,
              "num_heads": mixer.n_heads, "use_short_conv": mixer.use_short_conv, "conv_size": mixer.conv_size}
    if mixer.kind == "gla":
        from fla.layers import GatedLinearAttention

        return GatedLinearAttention(**common, gate_low_rank_dim=mixer.gk_proj[0].out_features,
                                    gate_logit_normalizer=mixer.gate_logit_normalizer)
    if mixer.kind == "retnet":
        from fla.layers import MultiScaleRetention

        return MultiScaleRetention(**common)
    from fla.layers import DeltaNet

    return DeltaNet(**common, allow_neg_eigval=mixer.allow_neg_eigval)


def official_and_timing(ctx: Ctx, family: str, kind: str | None, backend: str, label: str) -> None:
    """Mixer level, bf16: the official layer loads our state_dict and agrees; then fwd+bwd times."""
    from seqbench import models

    batch, T, D = ctx.shapes.modern_bench
    cfg = {"d_model": D, "n_layers": 1, "backend": backend} | ({"kind": kind} if kind else {})
    torch.manual_seed(0)
    mixer = models.build(family, **cfg).blocks[0].mixer.to(ctx.device, torch.bfloat16)
    theirs = official_module(family, mixer)
    theirs.load_state_dict(mixer.state_dict(), strict=True)
    theirs = theirs.to(ctx.device, torch.bfloat16)
    g = torch.Generator(device="cpu").manual_seed(5)
    u = torch.randn(batch, T, D, generator=g).to(ctx.device, torch.bfloat16).requires_grad_()
    gy = torch.randn(batch, T, D, generator=g).to(ctx.device, torch.bfloat16)

    def out_of(m: torch.nn.Module) -> torch.Tensor:
        y = m(u)
        return y[0] if isinstance(y, tuple) else y  # fla layers return (o, attentions, past_key_values)

    with torch.no_grad():
        a, b = out_of(mixer), out_of(theirs)
    res = compare(a, b, BF16)
    ctx.rec.row("modern", f"{label} vs official layer, same state_dict (bf16, B={batch}, T={T})", _pf(res),
                **{k: v for k, v in res.items() if k != "passed"})
    times = interleaved_ratio(
        lambda: bench_ms(lambda: out_of(mixer).backward(gy), ctx.device, rep_ms=300, grad_to_none=[u, *mixer.parameters()])[0],
        lambda: bench_ms(lambda: out_of(theirs).backward(gy), ctx.device, rep_ms=300, grad_to_none=[u, *theirs.parameters()])[0],
        rounds=3)
    ctx.rec.row("modern", f"{label} fwd+bwd time bf16: seqbench / official", "info", ratio=times["ratio"],
                seqbench_ms=times["a"], official_ms=times["b"])


def internal_section(args: argparse.Namespace) -> int:
    """A section run as a child: its rows go to OUT/rows.jsonl (the parent reads them from there)."""
    ctx = make_ctx(args, child=True)
    ctx.deadline = time.monotonic() + (args.child_deadline - time.time())
    ctx.rec.t0 -= args.child_elapsed or 0.0  # the rows' t_s continue the parent's clock
    try:
        from mamba_ssm.ops import selective_scan_interface

        ctx.ssm, ctx.ssm_error = selective_scan_interface, None
    except (ImportError, OSError, RuntimeError) as exc:
        ctx.ssm_error = f"{type(exc).__name__}: {exc}"[:300]
    budget = Budget(ctx.deadline)
    {"modern": modern_checks}[args.internal_section](ctx, budget)
    return 0


# ============================================================================ driver


SECTIONS: dict[str, Callable[[Ctx, Budget], None]] = {
    "env": section_env, "kernels": section_kernels, "numerics": section_numerics,
    "mamba_block": section_mamba_block, "fidelity": section_fidelity, "suite": section_suite,
    "modern": section_modern,
}


def make_ctx(args: argparse.Namespace, child: bool = False) -> Ctx:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry else "cpu")
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    kit = Path(args.kit) if args.kit else next((p for p in (ROOT / ".whl", ROOT.parent / "shared" / "gpu-kit")
                                                if (p / "ssops").is_dir()), None)
    meta = {"script": "scripts/gpu_reference.py", "mode": "dry (CPU, tiny shapes)" if args.dry else "gpu",
            "argv": sys.argv[1:], "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "budget_s": args.budget_s, "device": str(device), "source_sha": os.environ.get("SEQBENCH_SOURCE_SHA"),
            "tolerances": {"fp32": FP32.label, "bf16": BF16.label, "triton_fp32": TRITON_FP32.label,
                           "step": f"max|step - forward| <= {STEP_RTOL} * max(max|forward|, 1)",
                           "speed": f"|ratio - 1| <= {SPEED_TOLERANCE}"}}
    rec = Recorder(out, meta, append=child, summaries=not child)
    return Ctx(args=args, rec=rec, device=device, dry=args.dry, shapes=DRY_SHAPES if args.dry else GPU_SHAPES,
               kit=kit, work=work, deadline=time.monotonic() + args.budget_s)


def start_watchdog(ctx: Ctx, grace_s: float = 30.0) -> None:
    """Past the deadline + grace (a hung kernel, a stuck child): record it, kill the children, exit 3."""
    def fire() -> None:
        ctx.rec.summary["deadline_hit"] = "watchdog: the run overran its budget and was stopped"
        for p in ctx.children:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        ctx.rec.write()
        print("watchdog: budget overrun, exiting", flush=True)
        os._exit(3)

    timer = threading.Timer(max(1.0, ctx.deadline - time.monotonic() + grace_s), fire)
    timer.daemon = True
    timer.start()


def run_sections(ctx: Ctx, selected: list[str]) -> None:
    """Each selected section in priority order, within its own budget and the run's deadline."""
    for i, name in enumerate(SECTION_ORDER):
        sec = ctx.rec.section(name)
        if name not in selected:
            sec["status"] = "not selected"
            continue
        # what the later sections keep back: their reserves, but never more than half of what is left
        reserve = min(sum(RESERVE_S[n][1 if ctx.dry else 0] for n in SECTION_ORDER[i + 1:] if n in selected),
                      0.5 * (ctx.deadline - time.monotonic()))
        cap = SECTION_CAP[name][1 if ctx.dry else 0]
        end = min(time.monotonic() + cap, ctx.deadline - reserve)
        if name == "modern":
            end = ctx.deadline - 5.0
        budget = Budget(end)
        sec["budget_s"] = round(budget.left(), 1)
        t0 = time.monotonic()
        if budget.left() < 2:
            sec["status"] = "budget exhausted before it started"
            ctx.rec.row(name, "section", "budget", reason=f"{budget.left():.0f} s left of the run's budget")
            continue
        try:
            SECTIONS[name](ctx, budget)
            statuses = {r["status"] for r in sec["rows"]}
            sec["status"] = ("failed" if statuses & {"fail", "error"} else
                             "partial (budget)" if "budget" in statuses else
                             "skipped" if statuses <= {"skip"} else "ok")
        except BudgetExhausted as exc:
            sec["status"] = "partial (budget)"
            ctx.rec.row(name, f"stopped: {exc}", "budget", reason="section budget exhausted")
        except Exception as exc:  # noqa: BLE001 — a section's crash must not cost the sections after it
            sec["status"] = "error"
            ctx.rec.row(name, "section", "error", error=_exc_text(exc), trace=traceback.format_exc()[-2000:])
        sec["wall_s"] = round(time.monotonic() - t0, 1)
        ctx.rec.write()


def print_final(ctx: Ctx, wall: float) -> None:
    print("\n" + "=" * 100)
    print(f"gpu_reference {ctx.rec.summary['mode']}: {wall:.0f} s of {ctx.args.budget_s} s; "
          f"mamba_ssm kernels: {ctx.kernel_verdict}; results in {ctx.rec.out}")
    for name in SECTION_ORDER:
        sec = ctx.rec.summary["sections"].get(name, {})
        counts: dict[str, int] = {}
        for r in sec.get("rows", []):
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        print(f"  {name:<12} {sec.get('status', '?'):<24} {sec.get('wall_s', 0):6.1f} s  "
              + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        for r in sec.get("rows", []):
            if r["status"] in ("fail", "error"):
                print(f"      {r['status'].upper()}: {r['check']}  {_brief(r)[:200]}")
    for line in ctx.rec.summary["sections"].get("suite", {}).get("table", []):
        print("  " + line)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true", help="run every section on CPU with tiny shapes")
    p.add_argument("--out", default="build/gpuref-out", help="rows.jsonl, summary.json, summary.md, env.json, "
                                                             "h200-run.tar.gz")
    p.add_argument("--work", help="scratch: planned suite, child logs (default OUT/work)")
    p.add_argument("--suite-out", help="the suite's run directory (default WORK/h200); resumed if it holds results")
    p.add_argument("--fresh-suite", action="store_true", help="delete --suite-out's results and start over")
    p.add_argument("--budget-s", type=float, default=None, help="the run's deadline (default 420 s; --dry 110 s)")
    p.add_argument("--sections", default=",".join(SECTION_ORDER), help="comma-separated, from: "
                   + ", ".join(SECTION_ORDER))
    p.add_argument("--rebuild", action="store_true", help="if the kit's .so fails to load, rebuild it (3-5 min)")
    p.add_argument("--kit", help="the GPU kit folder (default .whl/ or ../shared/gpu-kit)")
    p.add_argument("--mamba-backend", choices=["checked", "mamba_ssm", "reference"], default="checked",
                   help="mamba's backend in fidelity and suite (default: mamba_ssm if it passed the numerics)")
    p.add_argument("--internal-run-suite", metavar="SUITE_YAML", help=argparse.SUPPRESS)
    p.add_argument("--internal-section", help=argparse.SUPPRESS)
    p.add_argument("--child-deadline", type=float, help=argparse.SUPPRESS)
    p.add_argument("--child-elapsed", type=float, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 110.0 if args.dry else 420.0
    unknown = set(args.sections.split(",")) - set(SECTION_ORDER)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTION_ORDER)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.internal_run_suite:
        return internal_run_suite(args)
    if args.internal_section:
        return internal_section(args)
    t0 = time.monotonic()
    if args.dry:
        torch.set_num_threads(1)  # as the CPU suites: tiny ops on a shared machine time erratically with more
    ctx = make_ctx(args)
    if not args.dry and not torch.cuda.is_available():
        ctx.rec.row("env", "cuda", "fail", reason="torch.cuda.is_available() is False; use --dry for the CPU rehearsal")
        return 2
    start_watchdog(ctx)
    run_sections(ctx, args.sections.split(","))
    ctx.rec.summary["kernel_verdict"] = ctx.kernel_verdict
    ctx.rec.summary["wall_s"] = round(time.monotonic() - t0, 1)
    ctx.rec.write()
    print_final(ctx, time.monotonic() - t0)
    bad = any(s.get("status") in ("failed", "error") for s in ctx.rec.summary["sections"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
