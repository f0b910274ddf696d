"""Random but well-conditioned inputs for the memory op tests.

Well-conditioned matters: a deep memory with LayerNorm whose pre-norm output is tiny amplifies round-off by
1/std at every inner step, so two correct implementations drift apart in float64 for reasons unrelated to
either. Unit-norm keys, modest gates and weights with gain keep the naive reference itself stable.
"""

from __future__ import annotations

import torch


def make_inputs(*, B=2, T=23, H=2, D=6, L=2, hidden=12, per_layer=True, norm=False, residual=False,
                momentum=True, dtype=torch.float64, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=dtype) * scale

    def unit(x):
        return x / x.norm(dim=-1, keepdim=True)

    q, k = unit(rnd(B, T, H, D)), unit(rnd(B, T, H, D))
    v = rnd(B, T, H, D)
    gl = L if per_layer else None
    shape = (B, T, H, gl) if gl else (B, T, H)
    alpha = torch.rand(*shape, generator=g, dtype=dtype) * 0.05
    eta = torch.rand(*shape, generator=g, dtype=dtype)
    theta = torch.rand(*shape, generator=g, dtype=dtype) * 0.1
    dims = [D] + [hidden] * (L - 1) + [D]
    params = tuple(rnd(B, H, dims[i], dims[i + 1], scale=1.5 / dims[i] ** 0.5) for i in range(L))
    mom = tuple(rnd(B, H, dims[i], dims[i + 1], scale=0.05 / dims[i] ** 0.5) for i in range(L)) if momentum else None
    nw = (1 + rnd(H, D, scale=0.1), rnd(H, D, scale=0.1)) if norm else None
    leaves = [q, k, v, alpha, eta, theta, *params, *(mom or ()), *(nw or ())]
    if requires_grad:
        for t in leaves:
            t.requires_grad_()
    return dict(q=q, k=k, v=v, alpha=alpha, eta=eta, theta=theta, params=params, momentum=mom, norm=nw,
                residual=residual), leaves


def piece_inputs(B, H, n, D, DH, resume, seed=0):
    """One depth-2 piece in float64: ``(q, k, v, coef, G, W, S, norm)`` as ``piece.piece_forward`` takes them (``G``
    differs from ``W`` with ``resume``, as when a call resumes mid-chunk)."""
    from titans.ops.memory.chunk import decay_coefficients

    g = torch.Generator().manual_seed(seed)

    def mk(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    q, k, v = mk(B, H, n, D), mk(B, H, n, D), mk(B, H, n, D)
    alpha, eta, theta = (torch.rand(2, B, H, n, generator=g, dtype=torch.float64) * s for s in (0.1, 0.9, 0.5))
    beta, gamma, C, hv, M = decay_coefficients(alpha, eta, theta)
    coef = (beta, gamma, C, beta[..., n - 1], gamma[..., n - 1], C[..., n - 1, :n], hv[..., n - 1], M[..., n - 1, :n])
    W = [mk(B, H, D, DH, scale=0.2), mk(B, H, DH, D, scale=0.1)]
    S = [mk(B, H, D, DH, scale=0.05), mk(B, H, DH, D, scale=0.05)]
    G = [w + mk(*w.shape, scale=0.01) for w in W] if resume else W  # resuming mid-chunk: gradients at G != W
    norm = (1 + mk(H, D, scale=0.1), mk(H, D, scale=0.1))
    return q, k, v, coef, G, W, S, norm
