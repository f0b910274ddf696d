"""Causal attention with RoPE, an optional sliding window, a learnable persistent key/value prefix, and a bounded
streaming cache (SPEC §3).

Every key carries an absolute position; a query at position t sees key s when ``s <= t`` and, with a window ``w``,
``s > t - w`` (the window counts the token itself). Persistent keys have no position and are always visible
(paper Eq. 19; SPEC's **Decision**: a learnable key/value prefix per attention layer, not tokens fed through the
projections). ``attend`` has two implementations behind one signature: ``naive`` (masked softmax, the reference)
and ``sdpa`` (PyTorch's fused ``scaled_dot_product_attention``). With a window, ``sdpa`` over many more keys than the
window runs in blocks of queries (``attend_window``): each block sees only the keys its window can reach, so the
cost is linear in the length, where a dense ``[T, S]`` mask makes it quadratic.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .state import keep_last


def rope_cos_sin(positions: torch.Tensor, head_dim: int, base: float = 10000.0, dtype=torch.float32):
    """cos, sin ``[T, head_dim/2]`` for integer positions ``[T]``."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float64) / head_dim))
    ang = positions.to(torch.float64)[:, None] * inv[None, :]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of ``x [B, T, H, D]`` by the angles of each position."""
    x1, x2 = x.chunk(2, dim=-1)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)


def attention_mask(qpos: torch.Tensor, kpos: torch.Tensor, window: int | None) -> torch.Tensor:
    """``[T, S]`` boolean: may query at ``qpos[t]`` see key at ``kpos[s]``? Persistent keys use ``kpos = -1`` with
    a separate always-visible flag handled by the caller (see :func:`attend`)."""
    m = kpos[None, :] <= qpos[:, None]
    if window is not None:
        m &= kpos[None, :] > qpos[:, None] - window
    return m


def attend(q, k, v, mask, *, n_persistent: int = 0, impl: str = "sdpa"):
    """Softmax attention of ``q [B, T, H, D]`` over ``k, v [B, S, H, D]`` (the first ``n_persistent`` keys always
    visible, the others where ``mask [T, S - n_persistent]`` is true). Returns ``[B, T, H, D]``."""
    T = q.shape[1]
    if n_persistent:
        mask = torch.cat([mask.new_ones(T, n_persistent), mask], dim=1)
    if impl == "naive":
        scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~mask, float("-inf"))
        return torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def _block(window: int) -> int:
    """Queries per block of ``attend_window``: each block reads ``block + window - 1`` keys, so half a window costs
    1.5 keys a query against 2 for a whole one, in twice as many (batched) blocks."""
    return max(1, window // 2)


def attend_window(q, k, v, qpos, kpos, window: int, *, n_persistent: int = 0):
    """``attend(q, k, v, attention_mask(qpos, kpos, window), n_persistent=...)`` in blocks of queries.

    For the keys of a causal stream: ``kpos [S - n_persistent]`` consecutive positions whose last ``T`` are the
    queries' ``qpos [T]`` (a cache, then the queries' own keys), so that the keys a block of queries can see are one
    run of ``block + window - 1``. The mask is still taken from the positions (front and back padding get positions
    no query sees). ``q [B, T, H, D]``, ``k, v [B, S, H, D]`` (the persistent keys first) -> ``[B, T, H, D]``.
    """
    B, T, H, D = q.shape
    P = n_persistent
    pk, pv, k, v = k[:, :P], v[:, :P], k[:, P:], v[:, P:]
    b = _block(window)
    nb = -(-T // b)
    L = b + window - 1  # keys of one block: its own and the window - 1 before its first query
    keep = min(k.shape[1], T + window - 1)  # older keys are out of every query's window
    k, v, kpos = k[:, -keep:], v[:, -keep:], kpos[-keep:]
    front, back = T + window - 1 - keep, nb * b - T  # query j's window ends at padded key j + window - 1
    k, v = (F.pad(t, (0, 0, 0, 0, front, back)) for t in (k, v))
    lo, hi = (torch.iinfo(kpos.dtype).min, torch.iinfo(kpos.dtype).max) if not kpos.is_floating_point() else (
        -math.inf, math.inf)
    kp = torch.cat([kpos.new_full((front,), lo), kpos, kpos.new_full((back,), hi)])
    qp = torch.cat([qpos, qpos.new_full((back,), hi)]).view(nb, b, 1)
    kp = kp.unfold(0, L, b).unsqueeze(1)  # [nb, 1, L]
    mask = ((kp <= qp) & (kp > qp - window)) | (qp == hi)  # padded queries see everything: no empty row, discarded
    kb, vb = (t.unfold(1, L, b).permute(0, 1, 4, 2, 3) for t in (k, v))  # [B, nb, L, H, D]
    if P:
        kb = torch.cat([pk.unsqueeze(1).expand(-1, nb, -1, -1, -1), kb], 2)
        vb = torch.cat([pv.unsqueeze(1).expand(-1, nb, -1, -1, -1), vb], 2)
        mask = torch.cat([mask.new_ones(nb, b, P), mask], 2)
    qb = F.pad(q, (0, 0, 0, 0, 0, back)).view(B * nb, b, H, D).transpose(1, 2)
    kb, vb = (t.reshape(B * nb, P + L, H, D).transpose(1, 2) for t in (kb, vb))
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask.unsqueeze(1).repeat(B, 1, 1, 1))
    return out.transpose(1, 2).reshape(B, nb * b, H, D)[:, :T]


class KVCache(NamedTuple):
    """Keys (after RoPE) and values ``[B, S, H, D]`` of earlier tokens, with their positions ``[S]``."""

    k: torch.Tensor
    v: torch.Tensor
    pos: torch.Tensor

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self)


class Attention(nn.Module):
    """Multi-head causal attention (RoPE, optional window, persistent prefix) with a streaming KV cache.

    Args:
        d_model (int), n_heads (int): width and heads (head_dim = d_model / n_heads).
        window (int, Optional): sliding window w (the token itself included); None = full causal attention.
        n_persistent (int): learnable key/value pairs always visible. Default: 0.
        rope_base (float): RoPE base. Default: 10000.
        impl (str): "sdpa" | "naive". Default: sdpa.
    Shapes:
        ``forward(x [B, T, d_model], positions [T], cache)`` -> ``(y [B, T, d_model], cache)``; the cache keeps at
        most ``window - 1`` tokens (all of them without a window).
    """

    def __init__(self, d_model: int, n_heads: int, *, window: int | None = None, n_persistent: int = 0,
                 rope_base: float = 10000.0, impl: str = "sdpa"):
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"Attention: d_model={d_model} must split into n_heads={n_heads} heads of even size")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.window, self.n_persistent, self.rope_base, self.impl = window, n_persistent, rope_base, impl
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        if n_persistent:
            self.persistent_k = nn.Parameter(torch.randn(n_persistent, n_heads, self.head_dim) * 0.02)
            self.persistent_v = nn.Parameter(torch.randn(n_persistent, n_heads, self.head_dim) * 0.02)

    def project(self, x: torch.Tensor, positions: torch.Tensor):
        """q, k (rotated to their positions), v: each ``[B, T, H, D]``."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).unbind(2)
        cos, sin = rope_cos_sin(positions, self.head_dim, self.rope_base, x.dtype)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def attend(self, q, qpos, k, v, kpos, *, consecutive: bool = False):
        """Attention of queries at ``qpos`` over keys at ``kpos`` plus the persistent prefix -> ``[B, T, d_model]``.

        ``consecutive``: the keys are at consecutive positions ending at ``qpos`` (a stream's cache, then these
        tokens), so a window over more than twice its keys runs in blocks (:func:`attend_window`)."""
        B, T = q.shape[:2]
        blocks = consecutive and self.window is not None and self.impl == "sdpa" and kpos.shape[0] > 2 * self.window
        if self.n_persistent:
            pk = self.persistent_k.unsqueeze(0).expand(B, -1, -1, -1).to(k.dtype)
            pv = self.persistent_v.unsqueeze(0).expand(B, -1, -1, -1).to(v.dtype)
            k, v = torch.cat([pk, k], 1), torch.cat([pv, v], 1)
        if blocks:
            y = attend_window(q, k, v, qpos, kpos, self.window, n_persistent=self.n_persistent)
        else:
            y = attend(q, k, v, attention_mask(qpos, kpos, self.window), n_persistent=self.n_persistent,
                       impl=self.impl)
        return self.out(y.reshape(B, T, -1))

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None):
        q, k, v = self.project(x, positions)
        if cache is not None:
            k, v = torch.cat([cache.k, k], 1), torch.cat([cache.v, v], 1)
            kpos = torch.cat([cache.pos, positions])
        else:
            kpos = positions
        y = self.attend(q, positions, k, v, kpos, consecutive=True)  # the keys: a cache, then these tokens
        if self.window is not None:
            n = self.window - 1
            k, v, kpos = keep_last(k, n), keep_last(v, n), keep_last(kpos, n, 0)
        elif cache is None:
            v = v.clone()  # a view of the q/k/v projection, which it would keep alive (k and q are rotated copies)
        return y, KVCache(k, v, kpos)
