"""static: facts about a model that need no timing of the model itself.

Rows:
    params                model.n_params (every parameter, embeddings included)
    state_bytes           model.state_bytes(seq_len) at batch 1, streamable models only
                          (a recurrent state is constant; a KV cache grows with seq_len)
    flops_per_token       model.flops_per_token(seq_len): forward FLOPs per token, 2 x the
                          matmul weights plus each family's documented mixer extras
    matmul_flops_ceiling  best FLOP/s of a square matmul on this device and dtype, measured
                          once per process (bench.timing.matmul_ceiling): the MFU denominator

Settings (all optional):
    seq_len: 1024         used only when the cell has no seq_len
    ceiling: true         measure matmul_flops_ceiling (false skips that row)
"""

from __future__ import annotations

from typing import Any

from bench.measures import MeasureContext, register
from bench.timing import matmul_ceiling, merge_settings, positive, row

DEFAULTS: dict[str, Any] = {"seq_len": 1024, "ceiling": True}


@register("static")
def static(ctx: MeasureContext) -> list[dict]:
    s = merge_settings("static", ctx.settings, DEFAULTS)
    seq_len = positive("static", "seq_len", ctx.cell.seq_len if ctx.cell.seq_len is not None else s["seq_len"])
    model = ctx.build_model()
    rows = [row("params", model.n_params)]
    if model.streamable:
        rows.append(row("state_bytes", model.state_bytes(seq_len, 1)))
    rows.append(row("flops_per_token", model.flops_per_token(seq_len)))
    if s["ceiling"]:
        rows.append(row("matmul_flops_ceiling", matmul_ceiling(ctx.device, ctx.dtype)))
    return rows
