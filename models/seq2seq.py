"""`seq2seq`: RNN encoder-decoder (Sutskever et al. 2014; Cho et al. 2014) with optional attention:
additive (Bahdanau, Cho & Bengio 2015) or dot-product (Luong, Pham & Manning 2015, global, "dot" score).

A task sequence x (B, T) is split at `src_len` = S: the encoder reads the source x[:, :S]
and the decoder emits logits for the target positions S..T-1. Positions < S get zeros in
the (B, T, C) output, so the harness scores this model like any other.

    memory, state = Encoder(embed(x[:, :S]))               # (B, S, D), per-layer final states
    decoder input at position t: y_{t-1}, with y_{S-1} = x[:, S-1] (the last source token)
    none     : o_t = Dec(embed(y_{t-1}), s_{t-1});                   logits_t = head(o_t)
    additive : c_t = attn(s_{t-1}^top, memory),  score = v^T tanh(W_q s + W_k m_j)
               o_t = Dec([embed(y_{t-1}); c_t], s_{t-1});            logits_t = head(tanh(W_c [c_t; o_t]))
    dot      : o_t = Dec(embed(y_{t-1}), s_{t-1});  c_t = attn(o_t, memory), score = o_t . m_j
                                                                     logits_t = head(tanh(W_c [c_t; o_t]))

Teacher forcing (training mode with `targets` given): y_{t-1} = targets[:, t-1] (where a
target is IGNORE_INDEX the input token x[:, t-1] stands in). Otherwise greedy decoding feeds
back its own argmax. Without attention and with dot attention the teacher-forced decoder is
one fused RNN call over all target positions (Luong's model without input feeding);
additive attention needs the previous state for its query, so it steps.

The token embedding is shared by encoder and decoder (source and target tokens come from
one vocabulary). A bidirectional encoder's memory is projected 2D -> D (W_m, no bias) and
its final states bridged per layer: h0 = tanh(W_bh [h_fwd; h_bwd]) and, for the LSTM,
c0 = W_bc [c_fwd; c_bwd]. The backbone fields `norm` and `mlp_ratio` do not apply (there are
no norms or MLP blocks); `mlp_ratio` > 0 and `pool` != "none" are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from seqbench.errors import ConfigError
from seqbench.models.base import ModelConfig, SequenceModel, matmul_params
from seqbench.models.registry import register
from seqbench.models.rnn import rnn_impl

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # GRU h, or LSTM (h, c); each (L, B, D)


@dataclass(frozen=True)
class Seq2SeqConfig(ModelConfig):
    cell: Literal["lstm", "gru"] = "lstm"  # recurrent cell of encoder and decoder
    attention: Literal["none", "additive", "dot"] = "additive"  # none | Bahdanau 2015 | Luong 2015 (dot score)
    bidirectional_encoder: bool = False  # encoder reads the source both ways (memory and states projected to D)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_input is not None:
            raise ConfigError(
                f"d_input must be null for seq2seq (got {self.d_input}): its decoder feeds tokens back, "
                "so it reads token inputs only; use a token task, or another family for float features"
            )
        if self.pool != "none":
            raise ConfigError(f"pool must be 'none' for seq2seq (got {self.pool!r}): it emits one output per target position")
        if self.mlp_ratio != 0:
            raise ConfigError(f"mlp_ratio must be 0 for seq2seq (got {self.mlp_ratio}): it has no MLP blocks")
        if self.d_output is not None and self.d_output > self.vocab_size:
            raise ConfigError(
                f"d_output ({self.d_output}) must be <= vocab_size ({self.vocab_size}) for seq2seq: "
                "predicted classes are fed back to the decoder as input tokens"
            )


@register("seq2seq", Seq2SeqConfig)
class Seq2Seq(SequenceModel):
    needs_src_len = True

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        D, L, bi = config.d_model, config.n_layers, config.bidirectional_encoder
        rnn_cls = nn.LSTM if config.cell == "lstm" else nn.GRU
        inter_drop = config.dropout if L > 1 else 0.0  # torch applies it between layers only
        self.embed = nn.Embedding(config.vocab_size, D)
        self.encoder = rnn_cls(D, D, L, batch_first=True, bidirectional=bi, dropout=inter_drop)
        if bi:
            self.mem_proj = nn.Linear(2 * D, D, bias=False)  # W_m: memory (B, S, 2D) -> (B, S, D)
            self.bridge_h = nn.Linear(2 * D, D)  # W_bh: [h_fwd; h_bwd] -> decoder h0
            self.bridge_c = nn.Linear(2 * D, D) if config.cell == "lstm" else None  # W_bc: -> decoder c0
        d_dec_in = 2 * D if config.attention == "additive" else D  # additive feeds the context in
        self.decoder = rnn_cls(d_dec_in, D, L, batch_first=True, dropout=inter_drop)
        if config.attention == "additive":
            self.attn_q = nn.Linear(D, D, bias=False)  # W_q on the decoder state
            self.attn_k = nn.Linear(D, D)  # W_k on the memory (computed once per sequence)
            self.attn_v = nn.Linear(D, 1, bias=False)  # v
        if config.attention != "none":
            self.combine = nn.Linear(2 * D, D)  # W_c: [c_t; o_t] -> attentional hidden state
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(D, config.n_outputs)

    @property
    def impl(self) -> str:
        return rnn_impl(self.encoder)

    # --- encoder ----------------------------------------------------------------------
    def _bridge(self, s: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        L, B, D = self.config.n_layers, s.shape[1], self.config.d_model
        s = s.view(L, 2, B, D).permute(0, 2, 1, 3).reshape(L, B, 2 * D)  # (L, B, 2D): [fwd; bwd] per layer
        return proj(s)  # (L, B, D)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, State]:
        """src (B, S) tokens -> memory (B, S, D), decoder initial state (each (L, B, D))."""
        memory, state = self.encoder(self.drop(self.embed(src)))  # (B, S, D or 2D)
        if not self.config.bidirectional_encoder:
            return memory, state
        memory = self.mem_proj(memory)  # (B, S, D)
        if self.config.cell == "lstm":
            h, c = state
            return memory, (torch.tanh(self._bridge(h, self.bridge_h)), self._bridge(c, self.bridge_c))
        return memory, torch.tanh(self._bridge(state, self.bridge_h))

    # --- attention and output ---------------------------------------------------------
    def attend(self, query: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
        """query (B, T', D), memory (B, S, D), keys = W_k memory (additive only) -> context (B, T', D)."""
        if self.config.attention == "additive":
            e = torch.tanh(self.attn_q(query)[:, :, None] + keys[:, None])  # (B, T', S, D)
            scores = self.attn_v(e).squeeze(-1)  # (B, T', S)
        else:
            scores = query @ memory.transpose(1, 2)  # (B, T', S)
        return torch.softmax(scores, dim=-1) @ memory  # (B, T', D)

    def output(self, o: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Decoder outputs o (B, T', D) and their contexts -> logits (B, T', C)."""
        if context is not None:
            o = torch.tanh(self.combine(torch.cat([context, o], dim=-1)))  # (B, T', D)
        return self.head(self.drop(o))

    # --- decoder ----------------------------------------------------------------------
    def decode_step(
        self, y_prev: torch.Tensor, state: State, memory: torch.Tensor, keys: torch.Tensor | None
    ) -> tuple[torch.Tensor, State]:
        """y_prev (B,) tokens -> logits (B, 1, C), new state."""
        e = self.drop(self.embed(y_prev))[:, None]  # (B, 1, D)
        context = None
        if self.config.attention == "additive":
            s_top = (state[0] if isinstance(state, tuple) else state)[-1]  # (B, D) top layer h_{t-1}
            context = self.attend(s_top[:, None], memory, keys)  # (B, 1, D)
            e = torch.cat([e, context], dim=-1)  # (B, 1, 2D)
        o, state = self.decoder(e, state)  # (B, 1, D)
        if self.config.attention == "dot":
            context = self.attend(o, memory, keys)
        return self.output(o, context), state

    def teacher_forced(
        self, dec_in: torch.Tensor, state: State, memory: torch.Tensor, keys: torch.Tensor | None
    ) -> torch.Tensor:
        """dec_in (B, T') tokens y_{t-1} -> logits (B, T', C)."""
        if self.config.attention == "additive":
            logits = []
            for y_prev in dec_in.unbind(1):
                logit, state = self.decode_step(y_prev, state, memory, keys)
                logits.append(logit)
            return torch.cat(logits, dim=1)
        o, _ = self.decoder(self.drop(self.embed(dec_in)), state)  # (B, T', D), one fused call
        context = self.attend(o, memory, keys) if self.config.attention == "dot" else None
        return self.output(o, context)

    def greedy(
        self, y0: torch.Tensor, n_steps: int, state: State, memory: torch.Tensor, keys: torch.Tensor | None
    ) -> torch.Tensor:
        """y0 (B,) first decoder input -> logits (B, n_steps, C), each step fed its own argmax."""
        logits, y_prev = [], y0
        for _ in range(n_steps):
            logit, state = self.decode_step(y_prev, state, memory, keys)  # (B, 1, C)
            logits.append(logit)
            y_prev = logit[:, 0].argmax(-1)  # (B,)
        return torch.cat(logits, dim=1)

    def forward(self, x: torch.Tensor, src_len: int | None = None, targets: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T) tokens, source x[:, :src_len] -> (B, T, C) logits, zeros at positions < src_len."""
        if src_len is None:
            raise ValueError(
                "seq2seq needs src_len (where the target part starts), but this task has no source/target "
                "split (its Batch.src_len is None); run seq2seq on a task with one (e.g. copy, reverse)"
            )
        if x.dim() != 2 or x.is_floating_point():
            raise TypeError(f"seq2seq: inputs must be int64 tokens (B, T), got {tuple(x.shape)} {x.dtype}")
        B, T = x.shape
        S = int(src_len)
        if not 1 <= S <= T:
            raise ValueError(f"seq2seq: src_len must be in [1, seq_len={T}], got {S}")
        zeros = self.head.weight.new_zeros(B, S, self.config.n_outputs)  # (B, S, C) source positions
        if S == T:
            return zeros
        memory, state = self.encode(x[:, :S])
        keys = self.attn_k(memory) if self.config.attention == "additive" else None  # (B, S, D)
        if targets is not None and self.training:
            prev = targets[:, S - 1 : T - 1].clone()  # (B, T-S): y_{t-1}
            prev[:, 0] = x[:, S - 1]
            prev = torch.where(prev < 0, x[:, S - 1 : T - 1], prev)  # IGNORE_INDEX -> the input token
            logits = self.teacher_forced(prev, state, memory, keys)
        else:
            logits = self.greedy(x[:, S - 1], T - S, state, memory, keys)
        return torch.cat([zeros, logits], dim=1)  # (B, T, C)

    def _matmul_params(self, *names: str) -> int:
        return sum(matmul_params(getattr(self, n)) for n in names if getattr(self, n, None) is not None)

    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per sequence position, assuming the source is the first half (S = T // 2):
        the encoder, W_m and W_k run on S positions; the decoder, W_q, v, W_c and the head on
        T - S, each of which also attends over S memory rows (scores + weighted sum: 4 * S * D)."""
        S = seq_len // 2
        per_src = self._matmul_params("encoder", "mem_proj", "attn_k")
        per_tgt = self._matmul_params("decoder", "attn_q", "attn_v", "combine", "head")
        attn = 4.0 * S * self.config.d_model if self.config.attention != "none" else 0.0
        return (2.0 * S * per_src + (seq_len - S) * (2.0 * per_tgt + attn)) / seq_len
