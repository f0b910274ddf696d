"""One piece (a chunk, or the part of one) of the dual form: forward, and a hand-written backward.

``piece_forward`` is plain differentiable PyTorch (autograd can take its gradient, second order included);
``ChunkPiece`` wraps the same forward in a ``torch.autograd.Function`` whose backward recomputes the piece's
activations and applies the derivation of ``README.md`` §6, so training keeps one set of weights per chunk in
memory instead of every intermediate.

Shapes (per piece of n tokens): q, k ``[B, H, n, Dk]``, v ``[B, H, n, Dv]``; G, W, S: L tensors
``[B, H, d_in, d_out]``; coefficients stacked over layers: beta, gamma ``[L, B, H, n]``, C ``[L, B, H, n, n]``,
beta_n, gamma_n, h_n ``[L, B, H]``, c_n, m_n ``[L, B, H, n]`` (see ``chunk.decay_coefficients``).
"""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from .common import activation, activation_backward, activation_grad2, layer_norm, layer_norm_backward, mlp_activations


def _scaled_mm(s, x, w):
    """``diag(s) (x @ w)`` for ``s [.., n]``, ``x [.., n, d_in]``, ``w [.., d_in, d_out]``: the row scaling is
    applied on the narrower side (it commutes with the product), to touch fewer elements."""
    if x.shape[-1] <= w.shape[-1]:
        return (s[..., None] * x) @ w
    return s[..., None] * (x @ w)


def _scaled_outer(s, a, d):
    """``a^T diag(s) d``: rank-one terms weighted by ``s [.., n]``; ``a [.., n, d_in]``, ``d [.., n, d_out]``."""
    if a.shape[-1] <= d.shape[-1]:
        return (s[..., None] * a).mT @ d
    return a.mT @ (s[..., None] * d)


def piece_forward(q, k, v, coef, G, W, S, norm, act, residual, keep=False, state=None):
    """The dual form over one piece. Returns ``(o, W_new, S_new)``; with ``keep`` (the backward's recomputation)
    returns ``(o, saved)`` instead, the intermediates the backward needs, and skips the end state; with ``keep`` and
    ``state`` both, ``(o, W_new, S_new, saved)`` (a forward that keeps them for the backward: ``ChunkPiece``'s
    ``save``)."""
    state = not keep if state is None else state
    beta, gamma, C, beta_n, gamma_n, c_n, h_n, m_n = coef
    L = len(W)
    # Keys through the memory at G, and the per-token errors delta_l (inner gradient = a_l^T delta_l).
    a, zs = mlp_activations(k, G, act)
    z, ts = zs[-1], [None] * L
    xhat_k = r_k = None
    if norm is not None:
        y, xhat_k, r_k = layer_norm(z, *norm)
    else:
        y = z
    e = 2 * ((y + k if residual else y) - v)
    deltas = [None] * L
    deltas[L - 1] = layer_norm_backward(e, xhat_k, r_k, norm[0]) if norm is not None else e
    for l in range(L - 2, -1, -1):
        ts[l] = deltas[l + 1] @ G[l + 1].mT
        deltas[l] = activation_backward(ts[l], zs[l], act)

    # Queries through the per-token weights, layer by layer, without forming them.
    xs, zetas, CPs = [q], [], []
    h = q
    W_new, S_new = [], []
    for l in range(L):
        CP = C[l] * (h @ a[l].mT)  # [B, H, n, n]
        z = _scaled_mm(beta[l], h, W[l]) + _scaled_mm(gamma[l], h, S[l]) - CP @ deltas[l]
        if keep:
            zetas.append(z), CPs.append(CP)
        if state:
            # Weights and momentum after the piece (row n of the coefficients).
            W_new.append(torch.addcmul(beta_n[l][..., None, None] * W[l], S[l], gamma_n[l][..., None, None])
                         - _scaled_outer(c_n[l], a[l], deltas[l]))
            S_new.append(h_n[l][..., None, None] * S[l] - _scaled_outer(m_n[l], a[l], deltas[l]))
        if l < L - 1:
            h = activation(z, act)
            xs.append(h)
    xhat_q = r_q = None
    if norm is not None:
        out, xhat_q, r_q = layer_norm(z, *norm)
    else:
        out = z
    o = out + q if residual else out
    if not keep:
        return o, W_new, S_new
    saved = dict(a=a, zs=zs, ts=ts, deltas=deltas, e=e, xs=xs, zetas=zetas, CPs=CPs, xhat_q=xhat_q, r_q=r_q,
                 xhat_k=xhat_k, r_k=r_k)
    return (o, W_new, S_new, saved) if state else (o, saved)


def _ln_sums(x):
    """Sum a ``[B, H, n, D]`` per-element product over batch and tokens -> ``[H, D]``."""
    return x.sum(dim=(0, 2))


def weight_grads(X, dz, beta, gamma, W, S, dWp, dSp, beta_n, gamma_n, h_n):
    """One layer's weight-sized work in a piece's backward: ``(YW, YS, dW, dS, dbeta_n, dgamma_n, dh_n)`` with
    ``YW = dz W^T``, ``YS = dz S^T`` ``[B, H, n, d_in]``, the gradients of the piece's starting weights and momentum
    ``dW = X^T diag(beta) dz + beta_n dW'`` and ``dS = X^T diag(gamma) dz + gamma_n dW' + h_n dS'``
    ``[B, H, d_in, d_out]``, and of the end coefficients ``<dW', W>``, ``<dW', S>``, ``<dS', S>`` ``[B, H]``.
    ``X [B, H, n, d_in]``: the layer's query-side input; ``dz [B, H, n, d_out]``: the gradient of its output;
    ``beta, gamma [B, H, n]``; ``dW', dS'``: the gradients of the piece's end weights and momentum; ``beta_n, gamma_n,
    h_n [B, H]``. (``triton_piece_bwd.weight_grads_triton`` does it in one pass over the weights.)"""
    bn, gn, hn = (x[..., None, None] for x in (beta_n, gamma_n, h_n))
    dW = torch.addcmul(_scaled_outer(beta, X, dz), dWp, bn)
    dS = torch.addcmul(torch.addcmul(_scaled_outer(gamma, X, dz), dWp, gn), dSp, hn)
    return (dz @ W.mT, dz @ S.mT, dW, dS, (dWp * W).sum((-2, -1)), (dWp * S).sum((-2, -1)),
            (dSp * S).sum((-2, -1)))


def piece_backward(do, dWp, dSp, q, k, v, coef, G, W, S, norm, act, residual, *, recompute=None, saved=None,
                   wgrad=None):
    """Gradients of one piece (README §6). Returns ``(dq, dk, dv, dcoef, dG, dW, dS, dnorm)``. ``recompute``: the
    forward that recomputes the piece's intermediates (``keep=True``; default :func:`piece_forward`, or a kernel of
    the same contract such as ``triton_piece.piece_forward_triton``); ``saved``: those intermediates, kept by the
    forward, instead of recomputing them; ``wgrad``: :func:`weight_grads` or a kernel of its contract."""
    beta, gamma, C, beta_n, gamma_n, c_n, h_n, m_n = coef
    L = len(W)
    sv = saved
    if sv is None:
        with torch.no_grad():
            _, sv = (recompute or piece_forward)(q, k, v, coef, G, W, S, norm, act, residual, keep=True)
    a, deltas, xs, zs = sv["a"], sv["deltas"], sv["xs"], sv["zs"]
    dG, dW, dS, dD, da = [None] * L, [None] * L, [None] * L, [None] * L, [None] * L
    dbeta, dgamma, dC = torch.empty_like(beta), torch.empty_like(gamma), torch.empty_like(C)
    dbeta_n, dgamma_n, dh_n = torch.empty_like(beta_n), torch.empty_like(gamma_n), torch.empty_like(h_n)
    dc_n, dm_n = torch.empty_like(c_n), torch.empty_like(m_n)
    dlnw = dlnb = None

    # 1. Output and query path, layers L..1.
    dq = do if residual else None
    if norm is not None:
        dz = layer_norm_backward(do, sv["xhat_q"], sv["r_q"], norm[0])
        dlnw, dlnb = _ln_sums(do * sv["xhat_q"]), _ln_sums(do)
    else:
        dz = do
    n = C.shape[-1]
    upper = ~torch.tril(torch.ones(n, n, dtype=torch.bool, device=C.device))
    for l in range(L - 1, -1, -1):
        X, A, Dl = xs[l], a[l], deltas[l]
        # With the end-of-piece terms of the weights' and momentum's gradients (section 2's weight-sized part).
        YW, YS, dW[l], dS[l], dbeta_n[l], dgamma_n[l], dh_n[l] = (wgrad or weight_grads)(
            X, dz, beta[l], gamma[l], W[l], S[l], dWp[l], dSp[l], beta_n[l], gamma_n[l], h_n[l])
        dbeta[l] = (X * YW).sum(-1)
        dgamma[l] = (X * YS).sum(-1)
        dCP = dz @ Dl.mT  # minus the gradient of C * P, [B, H, n, n]
        P = X @ A.mT
        dC[l] = (-dCP * P).masked_fill_(upper, 0)
        dP = dCP * C[l]  # minus the gradient of P
        dD[l] = -(sv["CPs"][l].mT @ dz)
        dX = torch.addcmul(torch.addcmul(-(dP @ A), YW, beta[l][..., None]), YS, gamma[l][..., None])
        da[l] = -(dP.mT @ X)
        if l > 0:
            dz = activation_backward(dX, sv["zetas"][l - 1], act)
        else:
            dq = dX if dq is None else dq + dX

    # 2. End-of-piece weights and momentum (their weight-sized terms are weight_grads', above).
    for l in range(L):
        A, Dl, dWl, dSl = a[l], deltas[l], dWp[l], dSp[l]
        E1, E2 = A @ dWl, A @ dSl  # [B, H, n, d_out]
        dc_n[l] = -(E1 * Dl).sum(-1)
        dm_n[l] = -(E2 * Dl).sum(-1)
        dD[l] -= c_n[l][..., None] * E1 + m_n[l][..., None] * E2
        da[l] -= _scaled_mm(c_n[l], Dl, dWl.mT) + _scaled_mm(m_n[l], Dl, dSl.mT)

    # 3. The delta chain: delta_l = (delta_{l+1} G_{l+1}^T) * sigma'(z_l), second order in z_l.
    dzk = [None] * L
    for l in range(L - 1):
        dt = activation_backward(dD[l], zs[l], act)
        dzk[l] = dD[l] * sv["ts"][l] * activation_grad2(zs[l], act)
        dD[l + 1] = dD[l + 1] + dt @ G[l + 1]
        dG[l + 1] = dt.mT @ deltas[l + 1]

    # 4. Through the LayerNorm backward that produced delta_L (its second order), then e = 2 (out - v).
    dlast = dD[L - 1]
    if norm is not None:
        w = norm[0][:, None, :]
        xhat, r, e = sv["xhat_k"], sv["r_k"], sv["e"]
        ghat = e * w
        rho = r * dlast
        m_rx = (rho * xhat).mean(-1, keepdim=True)
        dghat = rho - rho.mean(-1, keepdim=True) - xhat * m_rx
        dxhat = -rho * (ghat * xhat).mean(-1, keepdim=True) - ghat * m_rx
        dr = (dlast * deltas[L - 1]).sum(-1, keepdim=True) / r
        de = dghat * w
        dlnw = dlnw + _ln_sums(dghat * e)
    else:
        de = dlast
    dout = 2 * de
    dv = -dout
    dk = dout if residual else None
    if norm is not None:
        dxhat = dxhat + dout * w
        dlnw = dlnw + _ln_sums(dout * xhat)
        dlnb = dlnb + _ln_sums(dout)
        df = r * (dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True))
        df = df - dr * r * r * xhat / xhat.shape[-1]
    else:
        df = dout

    # 5. Key path, layers L..1.
    dzk[L - 1] = df
    for l in range(L - 1, -1, -1):
        g = a[l].mT @ dzk[l]
        dG[l] = g if dG[l] is None else dG[l] + g
        da[l] = da[l] + dzk[l] @ G[l].mT
        if l > 0:
            dzk[l - 1] = dzk[l - 1] + activation_backward(da[l], zs[l - 1], act)
    dk = da[0] if dk is None else dk + da[0]
    dcoef = (dbeta, dgamma, dC, dbeta_n, dgamma_n, dc_n, dh_n, dm_n)
    return dq, dk, dv, dcoef, dG, dW, dS, (dlnw, dlnb)


class ChunkPiece(torch.autograd.Function):
    """``piece_forward`` with the hand-written, recomputing backward (first order only). ``meta``: ``(L, act,
    residual, fwd, bwd, save, shared)``; ``shared``: ``G`` is ``W``, given once (:func:`_split`). With ``save`` the
    forward keeps the piece's intermediates for the backward (``keep=True, state=True``) rather than the backward
    recomputing them: faster, at the memory of those intermediates per piece (``6 B H n d_hidden + 4 B H n d_out +
    2 B H n^2`` floats at depth 2). They are saved tensors of the node (``save_for_backward``), so that checkpointing
    (``torch.utils.checkpoint``, which drops saved tensors and recomputes them) bounds them as it bounds the rest."""

    @staticmethod
    def forward(ctx, meta, q, k, v, lnw, lnb, *rest):
        L, act, residual, fwd, _, save, shared = meta  # fwd/bwd: piece_forward/backward or kernels alike
        coef, G, W, S, _ = _split(rest, L, shared)
        norm = None if lnw is None else (lnw, lnb)
        ctx.spec, kept = None, []
        if save:
            o, W_new, S_new, intermediates = fwd(q, k, v, coef, G, W, S, norm, act, residual, keep=True, state=True)
            kept, ctx.spec = tree_flatten(intermediates)  # the tensors, and where the Nones were
        else:
            o, W_new, S_new = fwd(q, k, v, coef, G, W, S, norm, act, residual)
        ctx.meta = meta
        ctx.save_for_backward(q, k, v, lnw, lnb, *rest, *kept)
        return (o, *W_new, *S_new)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, *dstate):
        L, act, residual, _, bwd, _, shared = ctx.meta
        q, k, v, lnw, lnb, *rest = ctx.saved_tensors
        coef, G, W, S, kept = _split(rest, L, shared)
        norm = None if lnw is None else (lnw, lnb)
        low = q.dtype  # half-precision tokens with a float32 memory (impl="triton"): the backward runs in float32
        q, k, v, do = (x.to(W[0].dtype) for x in (q, k, v, do))
        extra = {} if ctx.spec is None else {"saved": tree_unflatten(kept, ctx.spec)}
        dq, dk, dv, dcoef, dG, dW, dS, (dlnw, dlnb) = bwd(
            do, dstate[:L], dstate[L:], q, k, v, coef, G, W, S, norm, act, residual, **extra)
        # One input was both G and W when shared: its gradient is the sum.
        dweights = [g + w for g, w in zip(dG, dW)] if shared else [*dG, *dW]
        return (None, dq.to(low), dk.to(low), dv.to(low), dlnw, dlnb, *dcoef, *dweights, *dS)


def _split(rest, L, shared):
    """``ChunkPiece``'s tensor inputs after ``lnb`` -> ``(coef, G, W, S, tail)``; ``tail``: what follows them (the
    intermediates the forward saved, in the backward). ``shared``: the piece starts a chunk, so its gradient point
    ``G`` is its starting ``W``, passed once (``torch.compile`` cannot trace a Function given the same tensor
    twice)."""
    coef, rest = rest[:8], rest[8:]
    if shared:
        return coef, rest[:L], rest[:L], rest[L:2 * L], rest[2 * L:]
    return coef, rest[:L], rest[L:2 * L], rest[2 * L:3 * L], rest[3 * L:]
