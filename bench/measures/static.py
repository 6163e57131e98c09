"""static: facts about a model that need no timing of the model itself.

Rows:
    params                model.n_params (every parameter, embeddings included)
    state_bytes           model.state_bytes(seq_len) at batch 1, streamable models only
                          (a recurrent state is constant; a KV cache grows with seq_len)
    flops_per_token       model.flops_per_token(seq_len): forward FLOPs per token, 2 x the
                          matmul weights plus each family's documented mixer extras
    matmul_flops_ceiling  best FLOP/s of a square matmul on this device and dtype, measured
                          once per process (seqbench.bench.measures.timing.matmul_ceiling): the MFU denominator

Settings: StaticSettings below.
"""

from __future__ import annotations

from dataclasses import dataclass

from seqbench.bench.measures import MeasureContext, measure
from seqbench.bench.measures.timing import matmul_ceiling, row
from seqbench.config import PosInt


@dataclass(frozen=True)
class StaticSettings:
    seq_len: PosInt = 1024  # used only when the cell has no seq_len
    ceiling: bool = True  # measure matmul_flops_ceiling (false skips that row)


@measure("static", StaticSettings, axes=("seq_len",))
def static(ctx: MeasureContext) -> list[dict]:
    s: StaticSettings = ctx.settings
    seq_len = int(ctx.cell.seq_len if ctx.cell.seq_len is not None else s.seq_len)
    model = ctx.build_model()
    rows = [row("params", model.n_params)]
    if model.streamable:
        rows.append(row("state_bytes", model.state_bytes(seq_len, 1)))
    rows.append(row("flops_per_token", model.flops_per_token(seq_len)))
    if s.ceiling:
        rows.append(row("matmul_flops_ceiling", matmul_ceiling(ctx.device, ctx.dtype)))
    return rows
