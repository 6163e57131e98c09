"""GatedConv: a gated causal depthwise convolution, (B, T, D) -> (B, T, D), with a streaming step."""

import torch
import torch.nn.functional as F
from torch import nn


class GatedConv(nn.Module):
    def __init__(self, d_model: int, kernel_size: int = 4, expand: int = 2):
        super().__init__()
        self.k, inner = kernel_size, expand * d_model
        self.in_proj = nn.Linear(d_model, 2 * inner)
        self.conv = nn.Conv1d(inner, inner, kernel_size, groups=inner, padding=kernel_size - 1)
        self.out_proj = nn.Linear(inner, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        v, g = self.in_proj(x).chunk(2, dim=-1)  # (B, T, E) each
        v = self.conv(v.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)  # causal: drop the right pad
        return self.out_proj(v * F.silu(g))

    # streaming: the state is the last kernel_size - 1 inputs of the convolution
    def init_state(self, batch_size, max_len, device, dtype):
        return torch.zeros(batch_size, self.conv.in_channels, self.k - 1, device=device, dtype=dtype)

    def step(self, x_t: torch.Tensor, state: torch.Tensor):  # x_t (B, D)
        v, g = self.in_proj(x_t).chunk(2, dim=-1)  # (B, E)
        window = torch.cat([state, v.unsqueeze(-1)], dim=-1)  # (B, E, k)
        v = (window * self.conv.weight.squeeze(1)).sum(-1) + self.conv.bias
        return self.out_proj(v * F.silu(g)), window[..., 1:]
