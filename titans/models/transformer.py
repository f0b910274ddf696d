"""Transformer++ baseline (Llama: RoPE, SwiGLU, RMSNorm) with full causal attention, and its sliding-window twin.

The baselines carry no persistent tokens (they are a Titans component, ablated separately). The full-attention
KV cache grows with the stream: ``transformer`` is the one variant whose state is not bounded.
"""

from __future__ import annotations

from torch import nn

from ..layers import SwiGLU
from .common import make_attention
from .config import ModelConfig


class TransformerBlock(nn.Module):
    """``x + Attn(norm(x))``, then ``x + MLP(norm(x))``. State: the attention's KV cache."""

    window: int | None = None

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = make_attention(cfg, window=self._window(cfg), persistent=False)
        self.norm2 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_hidden)

    def _window(self, cfg):
        return None

    def forward(self, x, positions, state=None):
        y, cache = self.attn(self.norm1(x), positions, state)
        x = x + y
        return x + self.mlp(self.norm2(x)), cache
