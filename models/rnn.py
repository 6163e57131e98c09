"""Recurrent families: `rnn` (Elman 1990, tanh), `lstm` (Hochreiter & Schmidhuber 1997), `gru` (Cho et al. 2014).

Every layer is torch's fused nn.RNN / nn.LSTM / nn.GRU (cuDNN on CUDA; oneDNN for the
LSTM on CPU, aten's native loop for GRU/RNN on CPU), one single-layer module per block:

    residual=True : embedding -> n_layers x (norm -> recurrent layer -> + residual [-> norm -> MLP -> +]) -> norm -> head
    residual=False: embedding -> n_layers x recurrent layer -> head   (the classic plain stack, no norms)

The plain stack is a BackboneModel with residual=False rather than one multi-layer
nn.LSTM: at B=16, T=256, D=128, L=2 on the 2-core CPU the two forms measured the same
(one multi-layer call vs L single-layer calls, inference: LSTM 16.6 vs 16.4 ms, GRU 24.3 vs
23.9 ms wall at 2 threads; LSTM 17.6 vs 18.1 ms CPU time at 1 thread, all inside noise), so
the uniform one-mixer-per-block structure costs nothing (scripts/bench_rnn_wrapper.py).

`impl` is decided from the parameters' device and dtype when read: "cudnn" (CUDA, cuDNN
enabled), "torch-cuda" (CUDA without it), "onednn" (an LSTM on CPU in a dtype oneDNN takes),
else "torch-cpu".

Bidirectional layers run both directions (hidden size D each) and project the
concatenated outputs back to the residual width: y = W_o [h_fwd; h_bwd], W_o (D, 2D), no
bias. Such models see the future, so they are not streamable (step raises).

Streaming (unidirectional): the state is (h,) for rnn/gru and (h, c) for lstm, each
(B, D) per layer; `step` runs the fused cell (torch.rnn_tanh_cell / lstm_cell / gru_cell)
with the layer's own weights, so it equals `forward` position by position.

FLOPs per token (forward, multiply-add = 2 FLOPs), per layer and direction, with g gates
(rnn 1, gru 3, lstm 4) and input width d_in (= D):
    2 * g * (d_in * D + D * D)   (+ 2 * 2D * D for the bidirectional projection)
Both weight_ih (g*D, d_in) and weight_hh (g*D, D) are 2-D, so models.base.matmul_params
already counts them; the gate nonlinearities and biases (O(g*D)) are left out, so these
mixers add no extra_flops_per_token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqbench.models.base import BackboneModel, Mixer, ModelConfig
from seqbench.models.registry import register

RNN_MODULES: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
N_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
N_STATES = {"rnn": 1, "gru": 1, "lstm": 2}  # h, plus c for the LSTM


def _onednn_lstm(dtype: torch.dtype) -> bool:
    """Whether torch runs an LSTM of this dtype on CPU through oneDNN (mirrors use_mkldnn in
    aten/src/ATen/native/RNN.cpp: fp32 always, bf16/fp16 when the CPU supports them, fp16 only without grad)."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    if dtype == torch.float32:
        return True
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported()) and not torch.is_grad_enabled()
    return False


def rnn_impl(module: nn.RNNBase) -> str:
    """The kernel path torch takes for this recurrent module, from its parameters' device and dtype now."""
    w = module.weight_ih_l0
    if w.device.type == "cuda":
        return "cudnn" if torch.backends.cudnn.enabled and torch.backends.cudnn.is_available() else "torch-cuda"
    if w.device.type == "cpu":
        return "onednn" if isinstance(module, nn.LSTM) and _onednn_lstm(w.dtype) else "torch-cpu"
    return f"torch-{w.device.type}"


@dataclass(frozen=True)
class RecurrentConfig(ModelConfig):
    """Shared by rnn / lstm / gru (each family has its own subclass below)."""

    bidirectional: bool = False  # run each layer both ways; outputs projected 2D -> D (not streamable)
    residual: bool = True  # pre-norm residual backbone; False = classic plain stack (no norms, no residuals)


@dataclass(frozen=True)
class RNNConfig(RecurrentConfig):
    """Elman RNN, h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""


@dataclass(frozen=True)
class LSTMConfig(RecurrentConfig):
    """LSTM with input, forget, cell and output gates (torch's nn.LSTM, no peepholes, no projection)."""


@dataclass(frozen=True)
class GRUConfig(RecurrentConfig):
    """GRU with reset and update gates (torch's nn.GRU: reset applied after the hidden matmul)."""


class RecurrentMixer(Mixer):
    """One fused recurrent layer (B, T, D) -> (B, T, D); bidirectional outputs projected back to D."""

    def __init__(self, kind: str, d_model: int, bidirectional: bool) -> None:
        super().__init__()
        self.kind = kind
        self.rnn = RNN_MODULES[kind](d_model, d_model, num_layers=1, batch_first=True, bidirectional=bidirectional)
        self.proj = nn.Linear(2 * d_model, d_model, bias=False) if bidirectional else None
        self.streamable = not bidirectional

    @property
    def impl(self) -> str:
        return rnn_impl(self.rnn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)  # (B, T, D) or (B, T, 2D) when bidirectional
        return y if self.proj is None else self.proj(y)  # (B, T, D)

    def init_state(self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype) -> tuple:
        D = self.rnn.hidden_size
        return tuple(torch.zeros(batch_size, D, device=device, dtype=dtype) for _ in range(N_STATES[self.kind]))

    def step(self, x_t: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """x_t (B, D), state (h,) or (h, c) each (B, D) -> (h_t (B, D), new state)."""
        r = self.rnn
        weights = (r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0)
        if self.kind == "lstm":
            h, c = torch.lstm_cell(x_t, state, *weights)
            return h, (h, c)
        cell = torch.gru_cell if self.kind == "gru" else torch.rnn_tanh_cell
        h = cell(x_t, state[0], *weights)
        return h, (h,)

    def state_bytes(self, seq_len: int, batch_size: int = 1, bytes_per_elem: int = 4) -> int:
        return N_STATES[self.kind] * batch_size * self.rnn.hidden_size * bytes_per_elem


class RecurrentModel(BackboneModel):
    """Backbone of single-layer recurrent mixers; the family name picks the cell."""

    def __init__(self, config: RecurrentConfig) -> None:
        kind = self.family
        super().__init__(
            config,
            lambda i: RecurrentMixer(kind, config.d_model, config.bidirectional),
            residual=config.residual,
        )


@register("rnn", RNNConfig)
class RNN(RecurrentModel):
    """Elman tanh RNN stack."""


@register("lstm", LSTMConfig)
class LSTM(RecurrentModel):
    """LSTM stack."""


@register("gru", GRUConfig)
class GRU(RecurrentModel):
    """GRU stack."""


def state_dict_from_stacked(stacked: nn.RNNBase) -> dict[str, torch.Tensor]:
    """Mixer weights for a unidirectional model of this family from one multi-layer
    nn.RNN/LSTM/GRU of the same size: its `weight_ih_lk` becomes blocks.k.mixer.rnn.weight_ih_l0."""
    out = {}
    for k in range(stacked.num_layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            out[f"blocks.{k}.mixer.rnn.{name}_l0"] = getattr(stacked, f"{name}_l{k}")
    return out
