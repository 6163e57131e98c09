"""Environment fingerprint (env.json) and the calibration workload.

env.json keys: device, device_name, cpu_model, threads, torch_version, cuda_version,
cudnn_version, python, platform, hostname, machine_class, git_sha, git_dirty (seqbench's own checkout),
seqbench_version, project_git_sha, project_git_dirty (the repository the run started in),
cudnn_benchmark, tf32_matmul, calibration_s, started_at.

`machine_class` groups machines whose timings are comparable ("cpu-<model>-<n>t"
or "cuda-<gpu name>"), so baselines live under results/baselines/<machine_class>/.
`calibration_s` is the median time of a fixed matmul workload on the run's device:
`seqbench compare --normalize` divides throughput by it to compare runs recorded
on different machines of one class.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from seqbench.errors import UnavailableError


def source_root() -> Path | None:
    """The source checkout seqbench runs from (an editable install), or None for an installed copy.

    bench/run/env.py sits three levels below the checkout's root, which holds pyproject.toml and
    seqbench/; installed, the same three levels up is site-packages/seqbench, which holds neither."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "seqbench" / "__init__.py").is_file() else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state(root: Path | None = None) -> tuple[str | None, bool | None]:
    """(sha, dirty) of `root` (default: the checkout seqbench runs from), or (None, None) outside git."""
    root = root if root is not None else source_root()
    if root is None:
        return None, None
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return sha, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def seqbench_version() -> str:
    from seqbench import __version__

    return __version__


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cuda' without CUDA is a user error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UnavailableError(f"device 'cuda' requested but torch.cuda.is_available() is False "
                               f"(torch {torch.__version__}); use --device cpu or auto")
    return device


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def machine_class(device: str) -> str:
    name = device_name(device)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if device.startswith("cuda"):
        return f"cuda-{slug}"
    return f"cpu-{slug}-{torch.get_num_threads()}t"


def calibrate(device: str = "cpu", size: int = 256, repeats: int = 7) -> float:
    """Median seconds of a fixed reference workload (16 fp32 matmuls of size x size)."""
    dev = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=g).to(dev)
    b = torch.randn(size, size, generator=g).to(dev)

    def work() -> None:
        c = a
        for _ in range(16):
            c = torch.tanh(c @ b)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    work()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def environment(device: str = "cpu", calibration: bool = True) -> dict[str, Any]:
    """The fingerprint written to RUN_DIR/env.json."""
    sha, dirty = git_state()
    project_sha, project_dirty = git_state(Path.cwd())
    cuda = torch.cuda.is_available()
    return {
        "device": device,
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "flush_denormal": True,  # set in every worker by seqbench.bench.run.cell.prepare_process
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if cuda else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "machine_class": machine_class(device),
        "git_sha": sha,  # seqbench's own checkout (None when installed from a wheel)
        "git_dirty": dirty,
        "seqbench_version": seqbench_version(),
        "project_git_sha": project_sha,  # the repository the run was started in (a user's project)
        "project_git_dirty": project_dirty,
        "calibration_s": calibrate(device) if calibration else None,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
