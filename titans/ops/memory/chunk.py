"""Chunk-parallel memory op: the dual form of SPEC §1.3, matmuls inside a chunk, a Python loop over chunks only.

Inside a piece of n tokens that takes its gradients at ``G`` and starts from weights ``W`` and momentum ``S``
(``G = W`` at a chunk start; ``G`` is the weights before the chunk when a call resumes mid-chunk), for every
memory layer (each with its own gates):

    W_i = beta_i W + gamma_i S - sum_{j<=i} C_ij u_j          u_j = a_j^T delta_j  (rank one)
    S_i = H_i S - sum_{j<=i} theta_j (H_i / H_j) u_j

with ``A_i = prod_{k<=i}(1 - alpha_k)``, ``H_i = prod_{k<=i} eta_k``, ``beta_i = A_i``,
``gamma_i = sum_{m<=i} (A_i/A_m) H_m`` and ``C_ij = theta_j sum_{m=j..i} (A_i/A_m)(H_m/H_j)``. The per-token
gradients are rank one (``a_j``: the layer's input at key j, ``delta_j``: the back-propagated error), so a row
``x_i`` of queries multiplies ``W_i`` without ever forming it:

    x_i W_i = beta_i x_i W + gamma_i x_i S - sum_j C_ij (x_i . a_j) delta_j.

All products of decays are exponentials of sums of logs over a segment (no division by small products).
The derivation is in ``README.md`` beside this file; the per-piece forward and backward are in ``piece.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .common import MemoryState, gates_per_layer
from .piece import ChunkPiece, piece_backward, piece_forward
from .step import memory_step

# Tokens whose decay coefficients are built at once (memory O(COEF_GROUP_TOKENS * chunk_size) per head).
COEF_GROUP_TOKENS = 1024
# Calls of one token run ``step.memory_step`` (False: the dual form like any call; benchmarks/models.py times both).
ONE_TOKEN_STEP = True


def segsum(x: torch.Tensor) -> torch.Tensor:
    """``[..., n] -> [..., n, n]`` with ``out[i, j] = sum_{j<k<=i} x[k]`` for ``j <= i`` and ``-inf`` above.

    Summed directly per segment (a masked cumsum), not as a difference of prefix sums, so ``exp(out)`` is an
    exact product of decays even when the prefix products underflow.
    """
    n = x.shape[-1]
    xx = x.unsqueeze(-1).expand(*x.shape, n)  # xx[..., d, e] = x[d]
    ones = torch.ones(n, n, dtype=torch.bool, device=x.device)
    out = xx.masked_fill(~torch.tril(ones, -1), 0).cumsum(-2)
    return out.masked_fill(~torch.tril(ones), -math.inf)


def decay_coefficients(alpha: torch.Tensor, eta: torch.Tensor, theta: torch.Tensor):
    """Coefficients of the dual form for pieces of ``n`` tokens; gates ``[..., n]``.

    Returns ``(beta [..., n], gamma [..., n], C [..., n, n], hv [..., n], M [..., n, n])`` where
    ``hv_i = H_i`` and ``M_ij = theta_j H_i / H_j`` (the momentum's weight on token j's gradient after token i).
    Row ``i`` depends on gates ``<= i`` only, so a shorter piece uses the leading block.
    """
    # A gate of exactly 0 (eta) or 1 (alpha) would give log(0); clamping at the dtype's smallest normal changes
    # the products by less than that number, but the gradient with respect to such a gate is then 0.
    tiny = torch.finfo(alpha.dtype).tiny
    la = torch.log((1 - alpha).clamp_min(tiny))
    le = torch.log(eta.clamp_min(tiny))
    DA = torch.exp(segsum(la))  # [..., n, n]: A_i / A_m
    DH = torch.exp(segsum(le))  # [..., n, n]: H_i / H_j
    beta = torch.exp(torch.cumsum(la, -1))
    hv = torch.exp(torch.cumsum(le, -1))
    gamma = (DA @ hv.unsqueeze(-1)).squeeze(-1)
    th = theta.unsqueeze(-2)
    return beta, gamma, (DA @ DH) * th, hv, DH * th


def _run_piece(G, W, S, q, k, v, coef, n, act, norm, residual, fused_backward, fwd=piece_forward, bwd=piece_backward,
               save=False):
    """One piece of ``n`` tokens; ``coef`` from :func:`decay_coefficients`, each ``[L, B, H, >=n(, >=n)]``.
    ``fwd``, ``bwd``: the per-piece forward and backward (``piece.py``, or the Triton kernels of the same
    signatures); ``save``: the forward keeps the piece's intermediates for the backward (``ChunkPiece``)."""
    beta, gamma, C, hv, M = coef
    c8 = (beta[..., :n], gamma[..., :n], C[..., :n, :n], beta[..., n - 1], gamma[..., n - 1], C[..., n - 1, :n],
          hv[..., n - 1], M[..., n - 1, :n])
    tensors = [q, k, v, *c8, *G, *W, *S, *(norm or ())]
    if fused_backward and torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        lnw, lnb = norm if norm is not None else (None, None)
        shared = all(g is w for g, w in zip(G, W))
        outs = ChunkPiece.apply((len(W), act, residual, fwd, bwd, save, shared), q, k, v, lnw, lnb, *c8,
                                *([] if shared else G), *W, *S)
        L = len(W)
        return outs[0], list(outs[1:1 + L]), list(outs[1 + L:])
    if fwd is not piece_forward and torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise ValueError("a kernel forward needs fused_backward=True (autograd cannot differentiate it)")
    return fwd(q, k, v, c8, G, W, S, norm, act, residual)


# Under torch.compile the loop over chunks stays Python and what it calls (each piece, its coefficients) is compiled
# once per shape and reused: traced, the loop would unroll into one graph of every chunk, whose compile time grows
# with the sequence (415 s against 24 s for 16 chunks of a depth-2 layer on 2 cores, and slower to run:
# benchmarks/compile_memory_op.py, docs/benchmarks.md).
@torch.compiler.disable(recursive=False)
def memory_update_chunk(q, k, v, alpha, eta, theta, params, momentum=None, *, chunk_size=16, activation="gelu",
                        norm=None, residual=False, fused_backward=True, piece=piece_forward,
                        piece_bwd=piece_backward, save=False):
    """Same contract as :func:`titans.ops.memory_update` (inputs are assumed validated).

    ``fused_backward=False`` lets autograd differentiate the forward instead of the hand-written backward
    (more memory and slower, but twice differentiable). ``piece``, ``piece_bwd``: the per-piece forward and
    hand-written backward (``piece.py``'s, or any functions of the same signatures). ``save``: with the hand-written
    backward, each piece's forward keeps its intermediates for the backward instead of the backward recomputing
    them (less time, more memory: ``piece.ChunkPiece``).

    A call of one token (decoding) with the default ``piece`` runs :func:`step.memory_step`, the recurrence written
    directly: the same numbers, a fraction of the operator calls, differentiated by autograd.
    """
    B, T, H, _ = k.shape
    b = chunk_size
    if isinstance(params, MemoryState):
        W, S, G, offset = list(params.params), list(params.momentum), list(params.chunk_params), params.offset
    else:
        W = list(params)
        S = list(momentum) if momentum is not None else [torch.zeros_like(w) for w in W]
        G, offset = list(W), 0
    L = len(W)
    if T == 1 and ONE_TOKEN_STEP and piece is piece_forward:
        G = W if offset == 0 else G
        g1 = [gates_per_layer(g, L, name)[:, 0] for g, name in ((alpha, "alpha"), (eta, "eta"), (theta, "theta"))]
        o, W, S = memory_step(q[:, 0], k[:, 0], v[:, 0], *g1, G, W, S, norm, activation, residual)
        offset = (offset + 1) % b
        return o.unsqueeze(1), MemoryState(tuple(W), tuple(S), tuple(W if offset == 0 else G), offset, b)
    # Gates -> [B, H, L, T]; tokens -> [B, H, T, D].
    gates = [gates_per_layer(g, L, name).permute(0, 2, 3, 1)
             for g, name in ((alpha, "alpha"), (eta, "eta"), (theta, "theta"))]
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    outs = []
    pos = 0

    if offset > 0 and T > 0:
        # Resume the chunk in progress: its remaining tokens take gradients at G, start from (W, S).
        n = min(b - offset, T)
        coef = [c.movedim(2, 0) for c in decay_coefficients(*(g[..., :n] for g in gates))]
        o, W, S = _run_piece(G, W, S, q[:, :, :n], k[:, :, :n], v[:, :, :n], coef, n, activation, norm, residual,
                             fused_backward, piece, piece_bwd, save)
        outs.append(o)
        offset = (offset + n) % b
        pos = n
        if offset == 0:
            G = W

    rest = T - pos
    if rest > 0:
        N = -(-rest // b)
        pad = N * b - rest
        # Neutral padding keeps the logs finite; padded rows are never read.
        ga, ge, gt = (F.pad(g[..., pos:], (0, pad), value=val) for g, val in zip(gates, (0.0, 1.0, 0.0)))
        gates_c = [g.reshape(B, H, L, N, b) for g in (ga, ge, gt)]
        qs, ks, vs = (F.pad(x[:, :, pos:], (0, 0, 0, pad)).reshape(B, H, N, b, -1).unbind(2) for x in (q, k, v))
        # Coefficients of a group of chunks at once (vectorized), groups of about COEF_GROUP_TOKENS tokens so that
        # their [.., b, b] matrices stay bounded however long the sequence.
        group = max(1, COEF_GROUP_TOKENS // b)
        for c0 in range(0, N, group):
            c1 = min(N, c0 + group)
            # [B, H, L, g, b(, b)] -> g tuples of [L, B, H, b(, b)]; unbind, not indexing: its backward stacks the
            # chunks' gradients once instead of zero-filling a full-size tensor per chunk.
            coef = [c.permute(3, 2, 0, 1, *range(4, c.dim())).unbind(0)
                    for c in decay_coefficients(*(g[..., c0:c1, :] for g in gates_c))]
            for c in range(c0, c1):
                n = b if c < N - 1 else b - pad
                G = W
                o, W, S = _run_piece(G, W, S, qs[c][:, :, :n], ks[c][:, :, :n], vs[c][:, :, :n],
                                     [t[c - c0] for t in coef], n, activation, norm, residual, fused_backward,
                                     piece, piece_bwd, save)
                outs.append(o)
        offset = rest % b
        if offset == 0:
            G = W

    o = torch.cat(outs, dim=2).transpose(1, 2) if outs else v.transpose(1, 2).new_zeros(v.transpose(1, 2).shape)
    return o, MemoryState(tuple(W), tuple(S), tuple(G), offset, b)
