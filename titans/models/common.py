"""Pieces shared by the variants: building the memory layer from the config, and the memory gate of MAC/MAG."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..layers import Attention, KVCache, NeuralMemory, NeuralMemoryState
from .config import ModelConfig


class MemoryAttentionState(NamedTuple):
    """Streaming state of a block holding a memory and a sliding-window attention (MAG, MAL)."""

    memory: NeuralMemoryState
    cache: KVCache


def make_memory(cfg: ModelConfig) -> NeuralMemory:
    m = cfg.memory
    return NeuralMemory(cfg.d_model, m.heads or cfg.n_heads, depth=m.depth, expansion=m.expansion,
                        activation=m.activation, residual=m.residual, layer_norm=m.layer_norm, chunk_size=m.chunk_size,
                        conv=m.conv, momentum=m.momentum, forgetting=m.forgetting, per_layer_gates=m.per_layer_gates,
                        chunk_gates=m.chunk_gates, theta_max=m.theta_max, alpha_init=m.alpha_init, impl=m.impl,
                        save_intermediates=m.save_intermediates)


def make_attention(cfg: ModelConfig, *, window: int | None, persistent: bool = True) -> Attention:
    return Attention(cfg.d_model, cfg.n_heads, window=window, n_persistent=cfg.n_persistent if persistent else 0,
                     rope_base=cfg.rope_base, impl=cfg.attn_impl)


class MemoryGate(nn.Module):
    """``o = RMSNorm_y(y) * sigmoid(RMSNorm_m(m))``: the attention branch gated by the memory branch.

    The paper (MAG, §4.2) normalizes both branches "using learnable vector-valued weights, followed by a
    non-linearity"; which branch the non-linearity acts on is not stated. **Decision**: a sigmoid on the memory
    branch, so that the memory decides how much of the (precise, short-range) attention output passes. Used by
    MAG (Eq. 28) and by MAC's output ``y ⊗ M*(y)`` (Eq. 25).

    ``mode="sum"`` (``ModelConfig.memory_gate``) returns ``RMSNorm_y(y) + RMSNorm_m(m)`` instead: not the paper's
    ⊗ but an ablation of ours. Through the gate the memory reaches the block's output only as a factor of ``y``
    (derivative at most a quarter of ``y``'s); the sum gives it a path of its own, as MAL's and the LMM's memory
    have. Measured on S-NIAH-1 (docs/results.md): MAG learned the pass key with the sum and not with the gate, but
    the sum cost 0.05-0.08 bits per byte on text. ``mode="gatesum"`` keeps both, ``RMSNorm_y(y) *
    sigmoid(RMSNorm_m(m)) + RMSNorm_m(m)``: the gate's multiplicative interaction and the memory's own path (ours
    too; it asks whether the sum's text cost is the loss of the gate).

    Shapes: ``y``, ``m``: ``[B, T, d_model]`` -> ``[B, T, d_model]``.
    """

    def __init__(self, d_model: int, eps: float = 1e-6, mode: str = "sigmoid"):
        super().__init__()
        if mode not in ("sigmoid", "sum", "gatesum"):
            raise ValueError(f"MemoryGate: mode must be 'sigmoid', 'sum' or 'gatesum', got {mode!r}")
        self.mode = mode
        self.norm_y = nn.RMSNorm(d_model, eps=eps)
        self.norm_m = nn.RMSNorm(d_model, eps=eps)

    def forward(self, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if self.mode == "sum":
            return self.norm_y(y) + self.norm_m(m)
        nm = self.norm_m(m)
        gated = self.norm_y(y) * torch.sigmoid(nm)
        return gated + nm if self.mode == "gatesum" else gated
