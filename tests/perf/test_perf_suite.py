"""Each throughput cell of the perf suite as a pytest-benchmark test (see conftest.py).

The timed call is the throughput measure's workload followed by a CUDA synchronize,
so queued GPU work is inside the round it belongs to. Rounds = the measure's
`repeats`, iterations per round from a one-call calibration against `min_time_s`,
warm-up rounds = `warmup`: the same protocol as `seqbench run`. extra_info carries
the cell (cell_id, model, seq_len, mode, tokens_per_call, …) so `seqbench compare`
matches pytest-benchmark JSON to run rows by cell_id + metric.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

pytestmark = pytest.mark.perf


def _timed_call(perf_case):
    """(model, the callable pytest-benchmark times) for one case; synchronizes CUDA inside."""
    from seqbench import models
    from seqbench.bench.measures.train import random_batch, workload_fn
    from seqbench.bench.run.cell import DTYPES

    cell = perf_case.cell
    device = torch.device(cell.device)
    torch.manual_seed(cell.seed)
    model = models.build(cell.family, **cell.model_config).to(device=device, dtype=DTYPES[cell.dtype])
    batch = random_batch(model, cell.batch_size, cell.seq_len, device, cell.seed)
    fn = workload_fn(model, perf_case.mode, batch, lr=perf_case.settings.lr)

    def call() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return model, call


def test_throughput(benchmark, perf_case) -> None:
    if perf_case.skip:
        pytest.skip(perf_case.skip)
    from seqbench.bench.run.env import device_name

    if perf_case.threads:
        torch.set_num_threads(int(perf_case.threads))
    cell, s = perf_case.cell, perf_case.settings
    model, call = _timed_call(perf_case)
    for _ in range(int(s["warmup"])):
        call()
    t0 = time.perf_counter()
    call()
    once = time.perf_counter() - t0
    iterations = max(1, min(10_000, math.ceil(float(s["min_time_s"]) / max(once, 1e-9))))
    tokens = cell.batch_size * cell.seq_len
    benchmark.group = f"{perf_case.mode} B={cell.batch_size} T={cell.seq_len} {cell.device}/{cell.dtype}"
    benchmark.extra_info.update(
        cell_id=cell.cell_id, model=cell.model, family=cell.family, task=cell.task, measure="throughput",
        metric="tokens_per_s", mode=perf_case.mode, batch_size=cell.batch_size, seq_len=cell.seq_len,
        device=cell.device, dtype=cell.dtype, seed=cell.seed, tokens_per_call=tokens, params=model.n_params,
        impl=model.impl, threads=torch.get_num_threads(), device_name=device_name(cell.device),
        torch_version=torch.__version__,
    )
    benchmark.pedantic(call, rounds=int(s["repeats"]), iterations=iterations, warmup_rounds=1)
