"""Titans MAL (Memory as a Layer, paper §4.3, Eqs. 29-31): the neural memory, then sliding-window attention.

**Decision (stacking)**: every block holds both, each its own pre-norm residual sublayer, then the MLP:
``x += Memory(norm(x)); x += SWA(norm(x)); x += MLP(norm(x))``. The paper cites H3 / Samba for the layout and
does not say how the two interleave across depth; stacking them inside each block keeps the variants at one block
type each. Persistent tokens enter the attention as a key/value prefix (SPEC §3); the memory's learnable ``W_0``
plays their role for the memory.
"""

from __future__ import annotations

from torch import nn

from ..layers import SwiGLU
from .common import MemoryAttentionState, make_attention, make_memory
from .config import ModelConfig


class MALBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm_mem = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mem = make_memory(cfg)
        self.norm_attn = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = make_attention(cfg, window=cfg.window)
        self.norm_mlp = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_hidden)

    def forward(self, x, positions, state: MemoryAttentionState | None = None):
        m, mem_state = self.mem(self.norm_mem(x), state.memory if state is not None else None)
        x = x + m
        y, cache = self.attn(self.norm_attn(x), positions, state.cache if state is not None else None)
        x = x + y
        return x + self.mlp(self.norm_mlp(x)), MemoryAttentionState(mem_state, cache)
