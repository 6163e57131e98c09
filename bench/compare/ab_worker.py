"""The worker of `seqbench ab`: a long-lived process that builds one cell's model with *its
side's* code, keeps it warm, and times blocks of calls when the coordinator asks.

The coordinator (seqbench.bench.compare.ab, HEAD's code) starts one worker per side with that
side's Python (the side's checkout installed in it) and runs this file as a script:

    PYTHON ab_worker.py ROOT                    # a seqbench checkout
    PYTHON ab_worker.py ROOT --project DIR      # a checkout of the user's own project

Until it knows the side's layout it imports only the standard library; then it imports the
side's models and workloads, whichever layout the checkout has:

    seqbench.models + seqbench.bench.measures.train    (the seqbench.* namespace)
    models + bench.train                                (the older top-level packages)

and refuses modules whose files are not under ROOT: a side that silently timed the other
side's code would compare nothing. A project side (a repository of the user's own models,
named in the suite by import path or entry point) runs the installed seqbench with DIR first
on sys.path, as PYTHONPATH=DIR would; after building a model it refuses any imported module
whose top-level package lives in DIR but whose file does not (e.g. an editable install of the
other side's copy).

Protocol: one JSON object per line on stdin, one reply per line on stdout (the worker moves
file descriptor 1 to stderr, so prints of the side's code never reach the protocol):

    start                                  -> {"ok": true, "hello": {root, layout, files, torch_version, python}}
    {"op": "setup", "cell": {...}, "mode": "inference" | "training" | "stream", "lr": float,
     "warmup": int, "stream_batch_size": int, "threads": int | null, "cpus": [int] | null,
     "slowdown": float}
                                           -> {"ok": true, "once_s": float, "impl": str, "params": int}
                                            | {"skip": reason} | {"error": message}
    {"op": "block", "n": int, "warm": bool} -> {"ok": true, "s": median seconds of one call, "total_s": float}
    {"op": "quit"}                         -> the process exits

A call is one forward pass (inference), one training step (training: forward, loss, backward,
AdamW step) or one stream (stream: init_state, then seq_len step() calls, each step timed). A
block first makes one untimed call — the other side's block just evicted this side's weights
from the caches; not when `warm`, this side ran the block before — then makes `n` calls back to back with the garbage collector off, timing
each on CPU and reporting their median (a call stretched by a preemption is an outlier the
median ignores); on CUDA the n calls are timed together with CUDA events. The test-only fault
`slowdown` f makes every timed call f times as long, the extra time spent busy-waiting at the
end of the block as seqbench.bench.measures.timing.time_calls spends it at the end of a sample
(Workload.block).
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

LAYOUTS = (  # (name, models module, workloads module): newest first
    ("seqbench", "seqbench.models", "seqbench.bench.measures.train"),
    ("top-level", "models", "bench.train"),
)
DTYPES = ("float32", "bfloat16", "float16")


def _under(path: str | None, root: Path) -> bool:
    if not path:
        return False
    try:
        Path(path).resolve().relative_to(root)
        return True
    except ValueError:
        return False


def import_side(root: Path) -> tuple[str, Any, Any]:
    """(layout, models module, workloads module) of the checkout at `root`; ImportError when
    no layout imports from `root`."""
    tried = []
    for layout, models_name, train_name in LAYOUTS:
        try:
            models = importlib.import_module(models_name)
            train = importlib.import_module(train_name)
        except ImportError as exc:
            tried.append(f"{models_name} + {train_name}: {exc}")
            continue
        files = (getattr(models, "__file__", None), getattr(train, "__file__", None))
        if all(_under(f, root) for f in files):
            return layout, models, train
        tried.append(f"{models_name} + {train_name} import from {files[0]}, {files[1]}, not from {root}")
    raise ImportError("; ".join(tried))


def import_project(import_dir: Path) -> tuple[str, Any, Any]:
    """(layout, models, workloads) of the installed seqbench, for a project side whose own code
    is found first in `import_dir`."""
    sys.path.insert(0, str(import_dir))
    models = importlib.import_module("seqbench.models")
    train = importlib.import_module("seqbench.bench.measures.train")
    return "project", models, train


def foreign_modules(import_dir: Path) -> list[str]:
    """Imported modules whose top-level package (or module) is in `import_dir` but which were
    loaded from elsewhere: "name (file)" each."""
    out = []
    for name, module in list(sys.modules.items()):
        top = name.partition(".")[0]
        if not ((import_dir / top).is_dir() or (import_dir / f"{top}.py").is_file()):
            continue
        file = getattr(module, "__file__", None)
        if file and not _under(file, import_dir):
            out.append(f"{name} ({file})")
    return sorted(out)


def prepare_process(threads: int | None, cpus: list[int] | None = None) -> None:
    """Pin to `cpus` (the coordinator pins both sides' workers to the same ones), then what every
    seqbench timing worker does: torch threads, denormals flushed to zero, glibc's mmap threshold
    pinned (see seqbench.bench.run.cell.prepare_process)."""
    import ctypes
    import ctypes.util

    import torch

    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    if threads:
        torch.set_num_threads(int(threads))
    torch.set_flush_denormal(True)
    libc_name = ctypes.util.find_library("c")
    if libc_name and os.uname().sysname == "Linux":
        try:
            libc = ctypes.CDLL(libc_name)
            libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
            libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        except (OSError, AttributeError):
            pass


def busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Workload:
    """One cell's model and its timed callable, built with the side's code."""

    def __init__(self, models: Any, train: Any, msg: dict[str, Any]) -> None:
        import torch

        cell = msg["cell"]
        self.torch = torch
        self.device = torch.device(cell["device"])
        dtype = getattr(torch, cell["dtype"]) if cell["dtype"] in DTYPES else torch.float32
        self.mode = msg["mode"]
        self.slowdown = float(msg.get("slowdown") or 1.0)
        torch.manual_seed(int(cell["seed"]))
        self.model = models.build(cell["family"], **cell["model_config"]).to(device=self.device, dtype=dtype)
        if self.mode == "stream":
            if not getattr(self.model, "streamable", hasattr(self.model, "step")):
                raise _Skip(f"{cell['family']} is not streamable (bidirectional, pooled or encoder-decoder): "
                            "it has no per-token step()")
            self.model.eval()
            batch_size = int(msg.get("stream_batch_size") or 1)
            self.x = train.random_batch(self.model, batch_size, int(cell["seq_len"]), self.device,
                                        int(cell["seed"])).inputs  # (B, T) tokens or (B, T, F)
            self.fn: Callable[[], Any] = self._stream
        else:
            batch = train.random_batch(self.model, int(cell["batch_size"]), int(cell["seq_len"]), self.device,
                                       int(cell["seed"]))
            self.fn = train.workload_fn(self.model, self.mode, batch, lr=float(msg.get("lr") or 1e-3))

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def _stream(self, times: list[float] | None = None) -> None:
        """One stream: init_state, then one step() per position, each timed into `times` (on
        CUDA with a synchronize after it: a streamed token is done when it is on the host)."""
        x = self.x
        with self.torch.no_grad():
            state = self.model.init_state(x.shape[0], x.shape[1])
            self.sync()
            for t in range(x.shape[1]):
                t0 = time.perf_counter()
                _, state = self.model.step(x[:, t], state)
                self.sync()
                if times is not None:
                    times.append(time.perf_counter() - t0)

    def block(self, n: int, warm: bool = False) -> dict[str, float]:
        """`n` timed calls after one untimed one (none when `warm`: this side ran the block just
        before): {"s": the median seconds of one call (of one step in a stream), "total_s": the
        block's timed seconds}.

        On CPU every call is timed on its own and the block reports their median: a call that a
        preemption (another process on this core) stretched is an outlier the median ignores.
        On CUDA the n calls are timed together with CUDA events (the GPU's own clock).

        The test-only `slowdown` f makes every timed call f times as long: the calls' times are
        multiplied by f and the extra (f - 1) x their sum is spent busy-waiting at the end of the
        block, as time_calls spends it at the end of a sample. (A busy-wait after every call ran
        the next call with cold caches: a x1.15 fault measured x1.2.)"""
        if not warm:
            self.fn()
        self.sync()
        enabled = gc.isenabled()
        gc.disable()
        try:
            times: list[float] = []
            if self.mode == "stream":
                for _ in range(n):
                    self._stream(times)
            elif self.device.type == "cuda":
                start = self.torch.cuda.Event(enable_timing=True)
                end = self.torch.cuda.Event(enable_timing=True)
                t0 = time.perf_counter()
                start.record()
                for _ in range(n):
                    self.fn()
                if self.slowdown > 1.0:
                    self.sync()
                    busy_wait((self.slowdown - 1.0) * (time.perf_counter() - t0))
                end.record()
                end.synchronize()
                total = start.elapsed_time(end) / 1e3
                return {"s": total / n, "total_s": total}
            else:
                for _ in range(n):
                    t0 = time.perf_counter()
                    self.fn()
                    times.append(time.perf_counter() - t0)
            total = sum(times)
            if self.slowdown > 1.0:
                busy_wait((self.slowdown - 1.0) * total)
            times.sort()
            mid = len(times) // 2
            median = times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid])
            return {"s": self.slowdown * median, "total_s": self.slowdown * total}
        finally:
            if enabled:
                gc.enable()


class _Skip(Exception):
    """The cell does not apply to this model (latency of a model without step())."""


def _error(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def serve(root: Path, proto: Any, project: Path | None = None) -> int:
    def send(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        layout, models, train = import_project(project) if project else import_side(root)
        import torch
    except ImportError as exc:
        fix = ("install seqbench in the Python that runs it" if project else
               "install it in the Python that runs it: pip install --no-deps -e ROOT")
        send({"error": f"the side at {root} does not import from its own checkout ({exc}); {fix}"})
        return 2
    prepared = False
    send({"ok": True, "hello": {"root": str(root), "layout": layout, "python": sys.version.split()[0],
                                "torch_version": torch.__version__,
                                "files": {"models": models.__file__, "workloads": train.__file__}}})
    work: Workload | None = None
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.get("op")
        if op == "quit":
            return 0
        try:
            if op == "setup":
                if not prepared:
                    prepare_process(msg.get("threads"), msg.get("cpus"))
                    prepared = True
                work = None
                gc.collect()
                work = Workload(models, train, msg)
                foreign = foreign_modules(project) if project else []
                if foreign:
                    work = None
                    send({"error": f"this side's code in {project} was imported from elsewhere: "
                                   f"{', '.join(foreign[:3])}; uninstall that copy or name the model by import "
                                   "path (package.module:Name) so that each side imports its own"})
                    continue
                for _ in range(max(3, int(msg.get("warmup") or 0))):
                    work.fn()
                work.sync()
                once = sorted(work.block(1)["total_s"] for _ in range(3))[1]
                send({"ok": True, "once_s": once, "impl": str(getattr(work.model, "impl", "")),
                      "params": int(getattr(work.model, "n_params", 0) or 0)})
            elif op == "block":
                if work is None:
                    send({"error": "block before a successful setup"})
                    continue
                timed = work.block(int(msg["n"]), bool(msg.get("warm")))
                send({"ok": True, **timed} if math.isfinite(timed["s"]) and timed["s"] > 0
                     else {"error": f"block timed {timed['s']!r} s per call"})
            else:
                send({"error": f"unknown op {op!r}"})
        except _Skip as exc:
            work = None
            send({"skip": str(exc)})
        except Exception as exc:  # noqa: BLE001 — a cell's failure is a reply, the worker lives on
            work = None
            send({"error": _error(exc)})
    return 0


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--project"):
        print("usage: python ab_worker.py CHECKOUT_ROOT [--project IMPORT_DIR]", file=sys.stderr)
        return 2
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path(here)]  # not the coordinator's folder
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stdout of the side's code (and of C extensions) goes to stderr
    sys.stdout = sys.stderr
    return serve(Path(argv[1]).resolve(), proto, Path(argv[3]).resolve() if len(argv) == 4 else None)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
