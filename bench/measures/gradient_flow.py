"""gradient_flow: the vanishing-gradient probe (Bengio et al. 1994; Hochreiter 1991).

For a held-out batch of the task, the loss at each sequence's last scored position p
is back-propagated to the output of the input embedding, and the L2 norm of
d loss(p) / d embedding(t) over the model dimension is taken at every earlier
position t. Its mean over the batch, against the distance p - t, shows how far back a
learning signal reaches: it decays geometrically in a vanilla RNN, much less in an
LSTM, and not at all through attention. The probe runs at initialisation (step 0)
and again after `steps` training steps on the task with the shared loop of
bench/measures/train.py.

The embedding is `model.embed` (the backbone's token embedding or input projection)
or else the model's first nn.Embedding. Its calls during one forward are laid end to
end in call order, a (B, D) output counting as one position (an encoder-decoder embeds
the source, then the decoder inputs, maybe one step at a time); a model whose calls do
not add up to the sequence length is skipped.
Dropout is off during the probe (eval mode), except that encoder-decoder models stay
in train mode so that teacher forcing keeps the decoder path differentiable.

Settings: GradientFlowSettings below (the training ones shared with accuracy).

Rows: grad_norm with columns distance, step (0, then the steps trained), lr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from seqbench.bench.measures import MeasureContext, Skip, measure
from seqbench.bench.measures.timing import row
from seqbench.bench.measures.train import TrainingSettings, run_model, train
from seqbench.config import PosFloat, PosInt
from seqbench.tasks.base import IGNORE_INDEX, Batch


@dataclass(frozen=True)
class GradientFlowSettings(TrainingSettings):
    lr: PosFloat = 1e-3  # learning rate of the training between the probes
    probe_batch_size: PosInt = 16  # sequences in the probe batch (eval split)
    n_distances: PosInt = 24  # distances reported: all when at most this many, else log-spaced


def input_embedding(model: nn.Module) -> nn.Module:
    emb = getattr(model, "embed", None)
    if isinstance(emb, nn.Module):
        return emb
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return module
    raise Skip(f"{getattr(model, 'family', type(model).__name__)}: no input embedding module to probe")


def last_position_batch(batch: Batch) -> tuple[Batch, torch.Tensor]:
    """The batch scored only at each row's last scored position, and those positions (B,)."""
    if not bool(batch.mask.any(1).all()):
        raise ValueError("every probe sequence needs at least one scored position")
    T = batch.mask.shape[1]
    idx = torch.arange(T, device=batch.mask.device)
    last = torch.where(batch.mask, idx, -1).max(1).values  # (B,)
    rows = torch.arange(batch.mask.shape[0], device=last.device)
    mask = torch.zeros_like(batch.mask)
    mask[rows, last] = True
    if batch.targets.is_floating_point():  # regression: the loss reads the mask
        targets = batch.targets
    else:
        targets = torch.full_like(batch.targets, IGNORE_INDEX)
        targets[rows, last] = batch.targets[rows, last]
    return Batch(batch.inputs, targets, mask, batch.src_len, batch.meta), last


def embedding_grad_norms(model: nn.Module, task: Any, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """(norms (B, T) of d loss(last scored position) / d embedding output, last positions (B,))."""
    captured: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        output.retain_grad()
        captured.append(output)

    seq2seq = getattr(model, "needs_src_len", False)
    was_training = model.training
    model.train(seq2seq)
    probe, last = last_position_batch(batch)
    handle = input_embedding(model).register_forward_hook(keep)
    try:
        model.zero_grad(set_to_none=True)
        out = run_model(model, batch.inputs, batch.src_len, batch.targets)
        task.loss(out, probe).backward()
    finally:
        handle.remove()
        model.train(was_training)
    T = batch.inputs.shape[1]
    # (B, T', D) for a sequence, (B, D) for one position (a decoder stepping)
    grads = [c.grad if c.grad is not None else torch.zeros_like(c) for c in captured]
    grads = [g if g.dim() == 3 else g.unsqueeze(1) for g in grads]
    if sum(g.shape[1] for g in grads) != T:
        raise Skip(f"{model.family}: its embedding calls cover {[tuple(c.shape) for c in captured]}, "
                   f"not the {T} input positions; cannot map gradients to positions")
    norms = torch.cat(grads, dim=1).float().norm(dim=-1)  # (B, T)
    model.zero_grad(set_to_none=True)
    return norms.detach().cpu().numpy(), last.cpu().numpy()


def pick_distances(max_distance: int, n: int) -> list[int]:
    if max_distance + 1 <= n:
        return list(range(max_distance + 1))
    return sorted({int(d) for d in np.round(np.geomspace(1, max_distance + 1, n)) - 1})


def norms_by_distance(norms: np.ndarray, last: np.ndarray, distances: list[int]) -> dict[int, float]:
    """Mean over rows of norms[b, last[b] - d] for each distance d (rows with last[b] >= d)."""
    out = {}
    for d in distances:
        rows = np.nonzero(last >= d)[0]
        if rows.size:
            out[d] = float(norms[rows, last[rows] - d].mean())
    return out


@measure("gradient_flow", GradientFlowSettings, needs_task=True)
def gradient_flow(ctx: MeasureContext) -> list[dict]:
    s: GradientFlowSettings = ctx.settings
    task = ctx.require_task("gradient_flow")
    seq_len = int(s.seq_len or task.seq_len)
    model = ctx.build_model()
    batch = task.batch(s.probe_batch_size, seq_len=seq_len, seed=ctx.cell.seed, split="eval").to(ctx.device)
    if getattr(model, "needs_src_len", False) and batch.src_len is None:
        raise Skip(f"{model.family} is an encoder-decoder model; task {task.name!r} needs a source/target split")
    lr, n_distances = s.lr, s.n_distances

    def probe(step: int) -> list[dict]:
        norms, last = embedding_grad_norms(model, task, batch)
        by = norms_by_distance(norms, last, pick_distances(int(last.max()), n_distances))
        return [row("grad_norm", v, distance=d, step=step, lr=lr, split="eval") for d, v in by.items()]

    rows = probe(0)
    ts = s.train_settings(lr=lr, seed=ctx.cell.seed, seq_len=seq_len)
    if ts.steps > 0:
        ctx.progress(f"gradient_flow: training {ts.steps} steps")
        result = train(model, task, ts, ctx.device, progress=ctx.progress)
        rows += probe(result.steps_done)
    return rows
