"""SwiGLU feed-forward (Llama): ``W_2 (SiLU(x W_1) * x W_3)``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """Args: d_model (int), hidden (int). Shapes: ``[B, T, d_model] -> [B, T, d_model]``."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.w13 = nn.Linear(d_model, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x):
        a, b = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(a) * b)
