"""Titans MAG (Memory as a Gate, paper §4.2, Eqs. 26-28): sliding-window attention and the neural memory in
parallel on the same input, combined by a gate.

``y = SWA*(norm(x))`` (persistent key/value prefix, window ``w``), ``m = Memory(norm(x))``, ``x += gate(y, m)``
with :class:`~titans.models.common.MemoryGate` (both branches RMS-normalized by learnable vectors, a sigmoid on the
memory branch). The memory runs on the tokens only: its learnable ``W_0`` plays the persistent tokens' role
(SPEC §3 **Decision**).
"""

from __future__ import annotations

from torch import nn

from ..layers import SwiGLU
from .common import MemoryAttentionState, MemoryGate, make_attention, make_memory
from .config import ModelConfig


class MAGBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = make_attention(cfg, window=cfg.window)
        self.mem = make_memory(cfg)
        self.gate = MemoryGate(cfg.d_model, cfg.norm_eps, cfg.memory_gate)
        self.norm2 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_hidden)

    def forward(self, x, positions, state: MemoryAttentionState | None = None):
        h = self.norm1(x)
        y, cache = self.attn(h, positions, state.cache if state is not None else None)
        m, mem_state = self.mem(h, state.memory if state is not None else None)
        x = x + self.gate(y, m)
        return x + self.mlp(self.norm2(x)), MemoryAttentionState(mem_state, cache)
