"""Titans MAC (Memory as a Context, paper §4.1, Eqs. 21-25; mask Fig. 3a).

The sequence is cut into segments of ``C = cfg.segment_len`` tokens (aligned to the start of the stream). For a
segment with normalized input ``x``:

    h = M*_{s-1}(q(x))                        retrieval with the memory as it was before the segment (Eq. 21)
    y = Attn([persistent || h || x])           outputs at the segment's token positions (Eqs. 22-23)
    m = Memory(RMSNorm(y))                     the memory is written with y, token by token, chunk size b (Eq. 24),
                                               each token reading it after its own write
    o = gate(y, m)                             y ⊗ M*(y) (Eq. 25), with MemoryGate

**Decisions.** Retrieval is per token (one ``h_j`` per segment token, Eq. 21), through a query projection of its own
(SiLU, l2-normalized per head) and an output projection back to ``d_model``. The mask (SPEC §3): token ``i`` of a
segment sees the persistent keys, ``h_j`` and ``x_j`` for ``j <= i`` in its segment, nothing of earlier segments
(block-diagonal: the past reaches it through the memory). ``h_j`` and ``x_j`` share position ``j`` for RoPE. The
memory's query/key/value come from ``y`` through the memory layer's own projections.

``cfg.mac_write="input"`` (ours, an ablation; model name suffix ``-inputwrite``) writes and reads the memory with the
block's normalized input ``x`` instead of ``y``, in parallel with the attention as MAG's memory is; retrieval ``h``
and the output gate are unchanged. Why it exists: at initialization the attention outputs of a segment are much
alike (mean cosine 0.85 between two tokens of a segment in the first block, against 0.07 for the inputs, on S-NIAH-1
instances: benchmarks/mac_write_similarity.py), so the paper's memory is written with little that tells one token
from another. On S-NIAH-1 MAC learned the pass key with this and ``memory_gate="sum"`` together, and not with either
alone (docs/results.md).

Streaming state: the memory's state, its weights at the segment start (for retrieval), the segment's keys and
values so far (at most ``2C``) and the offset inside the segment: bounded, whatever the stream length.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import KVCache, NeuralMemoryState, SwiGLU
from ..ops import MemoryState
from .common import MemoryGate, make_attention, make_memory
from .config import ModelConfig


class MACState(NamedTuple):
    memory: NeuralMemoryState | None  # None before the first token
    segment_memory: MemoryState | None  # the memory at the start of the current segment (read by h)
    cache: KVCache | None  # keys/values of h and x of the current segment
    offset: int  # tokens of the current segment already consumed


class MACBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.segment_len = cfg.segment_len
        self.norm1 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mem = make_memory(cfg)
        H, D = self.mem.n_heads, self.mem.head_dim
        self.retrieve_q = nn.Linear(cfg.d_model, H * D, bias=False)
        self.retrieve_norm = nn.RMSNorm(D, eps=cfg.norm_eps)
        self.retrieve_out = nn.Linear(H * D, cfg.d_model, bias=False)
        # Full attention inside a segment; segments never see each other (reset of the cache).
        self.attn = make_attention(cfg, window=None)
        # The memory writes the attention output, normalized first as every sublayer input is (pre-norm); or, with
        # mac_write="input", the block's input, already normalized.
        self.write_input = cfg.mac_write == "input"
        self.norm_mem = None if self.write_input else nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.gate = MemoryGate(cfg.d_model, cfg.norm_eps, cfg.memory_gate)
        self.norm2 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_hidden)

    def retrieve(self, x: torch.Tensor, memory: MemoryState) -> torch.Tensor:
        """``h = M*(q(x))`` for ``x [B, n, d_model]`` -> ``[B, n, d_model]`` (no write)."""
        B, n, _ = x.shape
        H, D = self.mem.n_heads, self.mem.head_dim
        q = F.normalize(F.silu(self.retrieve_q(x)).view(B, n, H, D), dim=-1)
        r = self.retrieve_norm(self.mem.read(q, memory))
        return self.retrieve_out(r.reshape(B, n, H * D))

    def _segment_piece(self, x, positions, state: MACState):
        """Tokens ``x [B, n, d]`` that all lie in one segment; returns the gated output and the new state."""
        B = x.shape[0]
        mem_state, seg_mem, cache, offset = state
        if offset == 0:  # a new segment: read the memory as it is now, forget the previous segment's keys
            seg_mem = mem_state.memory if mem_state is not None else self.mem.initial_state(B)
            cache = None
        h = self.retrieve(x, seg_mem)
        q, kx, vx = self.attn.project(x, positions)
        _, kh, vh = self.attn.project(h, positions)
        k, v, kpos = torch.cat([kh, kx], 1), torch.cat([vh, vx], 1), torch.cat([positions, positions])
        if cache is not None:
            k, v, kpos = torch.cat([cache.k, k], 1), torch.cat([cache.v, v], 1), torch.cat([cache.pos, kpos])
        y = self.attn.attend(q, positions, k, v, kpos)
        m, mem_state = self.mem(x if self.write_input else self.norm_mem(y), mem_state)
        offset = (offset + x.shape[1]) % self.segment_len
        return self.gate(y, m), MACState(mem_state, seg_mem, KVCache(k, v, kpos), offset)

    def forward(self, x, positions, state: MACState | None = None):
        state = state if state is not None else MACState(None, None, None, 0)
        hx = self.norm1(x)
        outs, start, T = [], 0, x.shape[1]
        while start < T:
            n = min(self.segment_len - state.offset, T - start)
            o, state = self._segment_piece(hx[:, start:start + n], positions[start:start + n], state)
            outs.append(o)
            start += n
        x = x + torch.cat(outs, 1) if outs else x
        return x + self.mlp(self.norm2(x)), state
