"""One token through the memory, written as the recurrence itself: the decoding path of ``chunk``.

Generating text writes one token per call. The dual form then does the work of a whole chunk for a single row:
the decay coefficients (logs, segment sums, exponentials), the coefficient slices, the query path through
``beta W + gamma S`` and the intra-chunk terms, in small operator calls that cost more in dispatch than in
arithmetic. For one token the recurrence of SPEC §1.2 is shorter written directly, forming the
new weights (which the state carries anyway):

    u   = grad_W ||M_W(k) - v||^2 at W = G        (rank one per layer: a_{l-1}^T delta_l, README §3)
    S'  = eta S - theta u
    W'  = (1 - alpha) W + S'
    o   = M_{W'}(q)

These are the same equations ``naive.py`` runs per token (with autograd for ``u``) and the same numbers the dual
form gives for a piece of one token; the tests hold all three together in float64. Plain PyTorch, so autograd
differentiates it (first and second order).
"""

from __future__ import annotations

import torch

from .common import LN_EPS, activation_backward, memory_forward, mlp_activations


def memory_step(q, k, v, alpha, eta, theta, G, W, S, norm, act, residual):
    """Write one token into the memory and read it after the write.

    Args:
        q, k: ``[B, H, Dk]``; v: ``[B, H, Dv]``.
        alpha, eta, theta: ``[B, H, L]`` (one gate per memory layer).
        G: L tensors ``[B, H, d_in, d_out]``, the weights where the gradient is taken (the chunk's start).
        W, S: like ``G``, the weights and momentum before this token.
        norm: None or the LayerNorm's ``(weight, bias)``, each ``[H, Dv]``. act: gelu | silu | relu.
        residual: ``M(x) = x + ...``.
    Returns:
        ``(o [B, H, Dv], W' (L tensors), S' (L tensors))``.
    """
    # Few operator calls is the point here (each costs microseconds of dispatch on a row of 64 numbers), hence ATen's
    # fused LayerNorm forward and backward and addcmul for the weight-sized updates.
    L = len(W)
    # The key through the memory at G, keeping each layer's input a_l and pre-activation z_l.
    a, zs = mlp_activations(k.unsqueeze(-2), G, act)  # a[0]: [B, H, 1, Dk]
    z = zs[-1]
    target = v.unsqueeze(-2) - a[0] if residual else v.unsqueeze(-2)
    if norm is not None:
        w = norm[0][:, None, :]  # [H, 1, Dv]
        xhat, mean, rstd = torch.native_layer_norm(z, z.shape[-1:], None, None, LN_EPS)
        e = 2 * (torch.addcmul(norm[1][:, None, :], xhat, w) - target)
        delta = torch.ops.aten.native_layer_norm_backward(e * w, z, z.shape[-1:], mean, rstd, None, None,
                                                          [True, False, False])[0]
    else:
        delta = 2 * (z - target)  # [B, H, 1, d_out]

    W_new, S_new = [None] * L, [None] * L
    keep = 1 - alpha
    for l in range(L - 1, -1, -1):
        # S' = eta S - theta a^T delta (the rank-one gradient as a broadcast product), W' = (1 - alpha) W + S'.
        S_new[l] = torch.addcmul(eta[:, :, l, None, None] * S[l], (theta[:, :, l, None, None] * a[l]).mT, delta,
                                 value=-1)
        W_new[l] = torch.addcmul(S_new[l], W[l], keep[:, :, l, None, None])
        if l > 0:
            delta = activation_backward(delta @ G[l].mT, zs[l - 1], act)
    o = memory_forward(q.unsqueeze(-2), W_new, activation_name=act, norm=norm, residual=residual)
    return o.squeeze(-2), W_new, S_new

