"""Reference memory op: a literal per-token transcription of SPEC §1.2 (paper Eqs. 13-15 with chunking).

For every token t (the chunk in progress started at token s):

    u_t = grad_W || M_W(k_t) - v_t ||^2  at  W = W_{s-1}      (autograd, second order kept)
    S_t = eta_t * S_{t-1} - theta_t * u_t
    W_t = (1 - alpha_t) * W_{t-1} + S_t
    o_t = M_{W_t}(q_t)

Slow (one autograd call per token) and obviously right; ``chunk.py`` must agree with it.
"""

from __future__ import annotations

import torch

from .common import MemoryState, gates_per_layer, memory_forward


def memory_update_naive(q, k, v, alpha, eta, theta, params, momentum=None, *, chunk_size=16, activation="gelu",
                        norm=None, residual=False):
    """Same contract as :func:`titans.ops.memory_update` (inputs are assumed validated)."""
    B, T, H, _ = k.shape
    if isinstance(params, MemoryState):
        W, S, G, offset = list(params.params), list(params.momentum), list(params.chunk_params), params.offset
    else:
        W = list(params)
        S = list(momentum) if momentum is not None else [torch.zeros_like(w) for w in W]
        G, offset = list(W), 0
    L = len(W)
    alpha, eta, theta = (gates_per_layer(g, L, n) for g, n in ((alpha, "alpha"), (eta, "eta"), (theta, "theta")))
    inputs = [q, k, v, alpha, eta, theta, *W, *S, *(norm or ())]
    keep_graph = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)

    def fwd(x, ws):
        return memory_forward(x, ws, activation_name=activation, norm=norm, residual=residual)

    outs = []
    for t in range(T):
        if offset == 0:
            G = list(W)
        kt = k[:, t, :, None, :]  # [B, H, 1, Dk]
        vt = v[:, t, :, None, :]
        qt = q[:, t, :, None, :]
        with torch.enable_grad():
            Gt = [g if g.requires_grad else g.detach().requires_grad_() for g in G]
            loss = (fwd(kt, Gt) - vt).pow(2).sum()
            u = torch.autograd.grad(loss, Gt, create_graph=keep_graph)
        for l in range(L):
            a_t = alpha[:, t, :, l, None, None]  # [B, H, 1, 1]
            e_t = eta[:, t, :, l, None, None]
            th_t = theta[:, t, :, l, None, None]
            S[l] = e_t * S[l] - th_t * u[l]
            W[l] = (1 - a_t) * W[l] + S[l]
        outs.append(fwd(qt, W))  # [B, H, 1, Dv]
        offset = (offset + 1) % chunk_size
    o = torch.cat(outs, dim=2).transpose(1, 2) if outs else v.new_zeros(v.shape)  # [B, T, H, Dv]
    if offset == 0:
        G = list(W)
    return o, MemoryState(tuple(W), tuple(S), tuple(G), offset, chunk_size)
