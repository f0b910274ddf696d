"""Transformer++ baseline (Llama: RoPE, SwiGLU, RMSNorm) with full causal attention, and its sliding-window twin.

The baselines carry no persistent tokens (they are a Titans component, ablated separately). The full-attention
KV cache grows with the stream: ``transformer`` is the one variant whose state is not bounded.
"""

from __future__ import annotations

from torch import nn

from ..layers import CausalDepthwiseConv1d, SwiGLU
from .common import make_attention
from .config import ModelConfig


class TransformerBlock(nn.Module):
    """``x + Attn(norm(x))``, then ``x + MLP(norm(x))``. State: the attention's KV cache.

    With ``cfg.attn_conv`` (ours, an ablation) the attention reads ``conv(norm(x))``, a causal depthwise
    convolution of kernel 4 as in the memory (:class:`CausalDepthwiseConv1d`), so each position's keys and values
    see the tokens just before it, as the memory's do; the state is then ``(KV cache, conv cache)``."""

    window: int | None = None

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = make_attention(cfg, window=self._window(cfg), persistent=False)
        self.norm2 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_hidden)
        self.conv = CausalDepthwiseConv1d(cfg.d_model) if cfg.attn_conv else None

    def _window(self, cfg):
        return None

    def forward(self, x, positions, state=None):
        h = self.norm1(x)
        if self.conv is None:
            y, cache = self.attn(h, positions, state)
        else:
            cache, conv_cache = state if state is not None else (None, None)
            h, conv_cache = self.conv(h, conv_cache)
            y, cache = self.attn(h, positions, cache)
            cache = (cache, conv_cache)
        x = x + y
        return x + self.mlp(self.norm2(x)), cache
