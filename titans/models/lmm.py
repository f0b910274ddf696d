"""Titans (LMM): the neural memory alone as the token mixer of every block (paper §4.4)."""

from __future__ import annotations

from torch import nn

from ..layers import SwiGLU
from .common import make_memory
from .config import ModelConfig


class LMMBlock(nn.Module):
    """``x + Memory(norm(x))``, then ``x + MLP(norm(x))``. State: the memory layer's state."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mem = make_memory(cfg)
        self.norm2 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_hidden)

    def forward(self, x, positions, state=None):
        y, state = self.mem(self.norm1(x), state)
        x = x + y
        return x + self.mlp(self.norm2(x)), state
