"""The worker of `seqbench ab`: a long-lived process that builds one cell's model with *its
side's* code, keeps it warm, and times blocks of calls when the coordinator asks.

The coordinator (seqbench.bench.compare.ab, HEAD's code) starts one worker per side with that
side's Python (the side's checkout installed in it) and runs this file as a script:

    PYTHON ab_worker.py ROOT

Until it knows the side's layout it imports only the standard library; then it imports the
side's models and workloads, whichever layout the checkout has:

    seqbench.models + seqbench.bench.measures.train    (the seqbench.* namespace)
    models + bench.train                                (the older top-level packages)

and refuses modules whose files are not under ROOT: a side that silently timed the other
side's code would compare nothing.

Protocol: one JSON object per line on stdin, one reply per line on stdout (the worker moves
file descriptor 1 to stderr, so prints of the side's code never reach the protocol):

    start                                  -> {"ok": true, "hello": {root, layout, files, torch_version, python}}
    {"op": "setup", "cell": {...}, "mode": "inference" | "training" | "stream", "lr": float,
     "warmup": int, "stream_batch_size": int, "threads": int | null, "slowdown": float}
                                           -> {"ok": true, "once_s": float, "impl": str, "params": int}
                                            | {"skip": reason} | {"error": message}
    {"op": "block", "n": int}              -> {"ok": true, "s": seconds of the n timed calls}
    {"op": "quit"}                         -> the process exits

A call is one forward pass (inference), one training step (training: forward, loss, backward,
AdamW step) or one stream (stream: init_state, then seq_len step() calls; only the steps are
timed). A block first makes one untimed call — the other side's block just evicted this
side's weights from the caches — then times `n` calls back to back with the garbage collector
off. The test-only fault `slowdown` busy-waits (slowdown - 1) x the elapsed time inside the
timed region, as seqbench.bench.measures.timing.time_calls does.
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
from pathlib import Path
from typing import Any, Callable

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


def prepare_process(threads: int | None) -> None:
    """What every seqbench timing worker does: torch threads, denormals flushed to zero, glibc's
    mmap threshold pinned (see seqbench.bench.run.cell.prepare_process)."""
    import ctypes
    import ctypes.util

    import torch

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

    def _stream(self) -> float:
        """One stream; returns the seconds of its step() calls (init_state excluded). On CUDA a
        synchronize after every step: a streamed token is done when it is on the host."""
        x = self.x
        with self.torch.no_grad():
            state = self.model.init_state(x.shape[0], x.shape[1])
            self.sync()
            t0 = time.perf_counter()
            for t in range(x.shape[1]):
                _, state = self.model.step(x[:, t], state)
                self.sync()
            return time.perf_counter() - t0

    def block(self, n: int) -> float:
        """Seconds of `n` timed calls, after one untimed call."""
        self.fn()
        self.sync()
        enabled = gc.isenabled()
        gc.disable()
        try:
            if self.mode == "stream":
                elapsed = sum(self._stream() for _ in range(n))
                if self.slowdown > 1.0:
                    t0 = time.perf_counter()
                    busy_wait((self.slowdown - 1.0) * elapsed)
                    elapsed += time.perf_counter() - t0
                return elapsed
            if self.device.type == "cuda":
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
                return start.elapsed_time(end) / 1e3
            t0 = time.perf_counter()
            for _ in range(n):
                self.fn()
            if self.slowdown > 1.0:
                busy_wait((self.slowdown - 1.0) * (time.perf_counter() - t0))
            return time.perf_counter() - t0
        finally:
            if enabled:
                gc.enable()


class _Skip(Exception):
    """The cell does not apply to this model (latency of a model without step())."""


def _error(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def serve(root: Path, proto: Any) -> int:
    def send(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        layout, models, train = import_side(root)
        import torch
    except ImportError as exc:
        send({"error": f"the side at {root} does not import from its own checkout ({exc}); install it in "
                       "the Python that runs it: pip install --no-deps -e ROOT"})
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
                    prepare_process(msg.get("threads"))
                    prepared = True
                work = None
                gc.collect()
                work = Workload(models, train, msg)
                for _ in range(max(3, int(msg.get("warmup") or 0))):
                    work.fn()
                work.sync()
                once = sorted(work.block(1) for _ in range(3))[1]
                send({"ok": True, "once_s": once, "impl": str(getattr(work.model, "impl", "")),
                      "params": int(getattr(work.model, "n_params", 0) or 0)})
            elif op == "block":
                if work is None:
                    send({"error": "block before a successful setup"})
                    continue
                seconds = work.block(int(msg["n"]))
                send({"ok": True, "s": seconds} if math.isfinite(seconds) and seconds > 0
                     else {"error": f"block timed {seconds!r} s"})
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
    if len(argv) != 2:
        print("usage: python ab_worker.py CHECKOUT_ROOT", file=sys.stderr)
        return 2
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path(here)]  # not the coordinator's folder
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stdout of the side's code (and of C extensions) goes to stderr
    sys.stdout = sys.stderr
    return serve(Path(argv[1]).resolve(), proto)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
