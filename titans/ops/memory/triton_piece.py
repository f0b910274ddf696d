"""Triton forward of one piece of the dual form: ``piece_forward_triton``, same signature as ``piece.piece_forward``.

One program per (batch, head) computes, in one launch, what ``piece_forward`` does in about forty PyTorch calls:
the keys through the memory at ``G`` and their errors ``delta_l`` (LayerNorm backward and activation derivative
included), the queries through the per-token weights without forming them, and the weights and momentum after the
piece. Everything is accumulated in float32 (matmuls with ``input_precision="ieee"``: no TF32), whatever the input
dtype; outputs take the dtype of their inputs. The backward kernel, the same derivation as ``piece.piece_backward``,
is in ``triton_piece_bwd.py``.

Scope of this kernel: memory depth 1 or 2; ``Dk``, ``Dv`` and the hidden width powers of two >= 16; gelu, silu or
relu; optional LayerNorm and residual. ``supported`` says why a configuration is not covered, and the dispatcher
then falls back to ``impl="chunk"``. Without CUDA the kernel runs only under Triton's interpreter
(``TRITON_INTERPRET=1``, read when this module is first imported), which is how the CPU tests exercise it.

Per program the whole memory (``G``, ``W``, ``S`` of every layer) is held on chip: right for the interpreter and for
head dims up to 64 with expansion 4; larger memories want the hidden dimension tiled (not done yet).
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # the optional extra is not installed
    HAS_TRITON = False

_ACT = {"gelu": 0, "silu": 1, "relu": 2}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def supported(q: torch.Tensor, params, activation: str) -> str | None:
    """``None`` when the kernel covers this call, else the reason it does not."""
    if not HAS_TRITON:
        return "triton is not installed (pip install 'titans[triton]')"
    if not (q.is_cuda or interpreting()):
        return f"tensors on {q.device.type} and TRITON_INTERPRET is not set"
    if len(params) > 2:
        return f"memory depth {len(params)} (the kernel covers depth 1 and 2)"
    if activation not in _ACT:
        return f"activation {activation!r}"
    dims = [params[0].shape[-2]] + [w.shape[-1] for w in params]
    if any(d < 16 or d & (d - 1) for d in dims):
        return f"memory dims {dims} (the kernel needs powers of two >= 16)"
    return None


if HAS_TRITON:

    @triton.jit
    def _act(z, ACT: tl.constexpr):
        if ACT == 0:
            return 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
        elif ACT == 1:
            return z * tl.sigmoid(z)
        else:
            return tl.maximum(z, 0.0)

    @triton.jit
    def _act_bwd(g, z, ACT: tl.constexpr):
        """``g * sigma'(z)``."""
        if ACT == 0:
            cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
            pdf = tl.exp(-0.5 * z * z) * 0.3989422804014327
            return g * (cdf + z * pdf)
        elif ACT == 1:
            s = tl.sigmoid(z)
            return g * s * (1.0 + z * (1.0 - s))
        else:
            return tl.where(z > 0, g, 0.0)

    @triton.jit
    def _mm(a, b):
        return tl.dot(a, b, input_precision="ieee")

    @triton.jit
    def _load_rows(ptr, b, h, s_b, s_h, s_n, rn, mask_n, D: tl.constexpr):
        """Rows ``rn`` of the ``[n, D]`` tile of (batch b, head h), float32, zero past ``n``."""
        rd = tl.arange(0, D)
        return tl.load(ptr + b * s_b + h * s_h + rn[:, None] * s_n + rd[None, :], mask=mask_n[:, None],
                       other=0.0).to(tl.float32)

    @triton.jit
    def _load_mat(ptr, R: tl.constexpr, K: tl.constexpr):
        r = tl.arange(0, R)
        c = tl.arange(0, K)
        return tl.load(ptr + r[:, None] * K + c[None, :]).to(tl.float32)

    @triton.jit
    def _store_mat(ptr, x, R: tl.constexpr, K: tl.constexpr):
        r = tl.arange(0, R)
        c = tl.arange(0, K)
        tl.store(ptr + r[:, None] * K + c[None, :], x.to(ptr.dtype.element_ty))

    @triton.jit
    def _layer(x, a, delta, W, S, coef_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr, Wn_ptr, Sn_ptr, n, rn,
               BN: tl.constexpr, DI: tl.constexpr, DO: tl.constexpr):
        """One memory layer of the query path and its end-of-piece weights: returns ``z`` ``[BN, DO]``."""
        mask_n = rn < n
        beta = tl.load(coef_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)
        gamma = tl.load(coef_ptr + BN + rn, mask=mask_n, other=0.0).to(tl.float32)
        C = tl.load(C_ptr + rn[:, None] * BN + rn[None, :], mask=mask_n[:, None] & mask_n[None, :],
                    other=0.0).to(tl.float32)
        CP = C * _mm(x, tl.trans(a))
        z = beta[:, None] * _mm(x, W) + gamma[:, None] * _mm(x, S) - _mm(CP, delta)
        cn = tl.load(cn_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)
        mn = tl.load(mn_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)
        beta_n = tl.load(scal_ptr).to(tl.float32)
        gamma_n = tl.load(scal_ptr + 1).to(tl.float32)
        h_n = tl.load(scal_ptr + 2).to(tl.float32)
        aT = tl.trans(a)
        _store_mat(Wn_ptr, beta_n * W + gamma_n * S - _mm(aT, cn[:, None] * delta), DI, DO)
        _store_mat(Sn_ptr, h_n * S - _mm(aT, mn[:, None] * delta), DI, DO)
        return z

    @triton.jit
    def _piece_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n,
                          so_b, so_h, so_n,
                          coef_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr,  # per layer: [L, B, H, ...] contiguous
                          G0_ptr, W0_ptr, S0_ptr, W0n_ptr, S0n_ptr, G1_ptr, W1_ptr, S1_ptr, W1n_ptr, S1n_ptr,
                          lnw_ptr, lnb_ptr, n, BH, H,
                          L: tl.constexpr, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr,
                          ACT: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr):
        pid = tl.program_id(0)
        b = pid // H
        h = pid % H
        rn = tl.arange(0, BN)
        mask_n = rn < n
        rv = tl.arange(0, DV)
        q = _load_rows(q_ptr, b, h, sq_b, sq_h, sq_n, rn, mask_n, DK)
        k = _load_rows(k_ptr, b, h, sk_b, sk_h, sk_n, rn, mask_n, DK)
        v = _load_rows(v_ptr, b, h, sv_b, sv_h, sv_n, rn, mask_n, DV)
        D0: tl.constexpr = DH if L == 2 else DV
        G0 = _load_mat(G0_ptr + pid * DK * D0, DK, D0)
        W0 = _load_mat(W0_ptr + pid * DK * D0, DK, D0)
        S0 = _load_mat(S0_ptr + pid * DK * D0, DK, D0)

        # Keys through the memory at G, then the per-token errors delta_l (inner gradient = a_l^T delta_l).
        z0 = _mm(k, G0)
        if L == 2:
            G1 = _load_mat(G1_ptr + pid * DH * DV, DH, DV)
            a1 = _act(z0, ACT)
            zk = _mm(a1, G1)
        else:
            zk = z0
        if NORM:
            lw = tl.load(lnw_ptr + h * DV + rv).to(tl.float32)
            lb = tl.load(lnb_ptr + h * DV + rv).to(tl.float32)
            mu = tl.sum(zk, axis=1) / DV
            xc = zk - mu[:, None]
            rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / DV + 1e-5)
            xhat = xc * rstd[:, None]
            y = xhat * lw[None, :] + lb[None, :]
        else:
            y = zk
        if RES:
            y = y + k
        e = tl.where(mask_n[:, None], 2.0 * (y - v), 0.0)
        if NORM:
            gh = e * lw[None, :]
            dlast = rstd[:, None] * (gh - (tl.sum(gh, axis=1) / DV)[:, None]
                                     - xhat * (tl.sum(gh * xhat, axis=1) / DV)[:, None])
        else:
            dlast = e

        # Queries through the per-token weights, layer by layer, and the weights after the piece.
        stride_l = BH  # coefficient tensors are [L, B*H, ...]
        if L == 2:
            W1 = _load_mat(W1_ptr + pid * DH * DV, DH, DV)
            S1 = _load_mat(S1_ptr + pid * DH * DV, DH, DV)
            delta0 = _act_bwd(_mm(dlast, tl.trans(G1)), z0, ACT)
            z = _layer(q, k, delta0, W0, S0, coef_ptr + pid * 2 * BN, C_ptr + pid * BN * BN, cn_ptr + pid * BN,
                       mn_ptr + pid * BN, scal_ptr + pid * 3, W0n_ptr + pid * DK * DH, S0n_ptr + pid * DK * DH,
                       n, rn, BN, DK, DH)
            x1 = _act(z, ACT)
            z = _layer(x1, a1, dlast, W1, S1, coef_ptr + (stride_l + pid) * 2 * BN,
                       C_ptr + (stride_l + pid) * BN * BN, cn_ptr + (stride_l + pid) * BN,
                       mn_ptr + (stride_l + pid) * BN, scal_ptr + (stride_l + pid) * 3, W1n_ptr + pid * DH * DV,
                       S1n_ptr + pid * DH * DV, n, rn, BN, DH, DV)
        else:
            z = _layer(q, k, dlast, W0, S0, coef_ptr + pid * 2 * BN, C_ptr + pid * BN * BN, cn_ptr + pid * BN,
                       mn_ptr + pid * BN, scal_ptr + pid * 3, W0n_ptr + pid * DK * DV, S0n_ptr + pid * DK * DV,
                       n, rn, BN, DK, DV)
        if NORM:
            mu = tl.sum(z, axis=1) / DV
            xc = z - mu[:, None]
            rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / DV + 1e-5)
            z = xc * rstd[:, None] * lw[None, :] + lb[None, :]
        if RES:
            z = z + q
        tl.store(o_ptr + b * so_b + h * so_h + rn[:, None] * so_n + rv[None, :], z.to(o_ptr.dtype.element_ty),
                 mask=mask_n[:, None])


def _block(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def pack_coefficients(coef, L: int, BH: int, n: int, BN: int):
    """The kernels' coefficient layout, float32, zero-padded from ``n`` to ``BN`` tokens: ``(beta|gamma [L, BH, 2,
    BN], C [L, BH, BN, BN], c_n [L, BH, BN], m_n [L, BH, BN], beta_n|gamma_n|h_n [L, BH, 3])``."""
    beta, gamma, C, beta_n, gamma_n, c_n, h_n, m_n = coef
    f32 = torch.float32

    def rows(x):  # [L, B, H, n] -> [L, B*H, BN]
        out = x.new_zeros(L, BH, BN, dtype=f32)
        out[..., :n] = x.reshape(L, BH, n)
        return out

    Cp = C.new_zeros(L, BH, BN, BN, dtype=f32)
    Cp[..., :n, :n] = C.reshape(L, BH, n, n)
    scal = torch.stack([beta_n, gamma_n, h_n], -1).reshape(L, BH, 3).to(f32).contiguous()
    return torch.stack([rows(beta), rows(gamma)], 2).contiguous(), Cp, rows(c_n), rows(m_n), scal


def piece_forward_triton(q, k, v, coef, G, W, S, norm, act, residual):
    """Same contract as :func:`titans.ops.memory.piece.piece_forward` (without ``keep``): ``(o, W_new, S_new)``.

    q, k ``[B, H, n, Dk]``, v ``[B, H, n, Dv]`` (any strides with a unit last one); G, W, S: L tensors
    ``[B, H, d_in, d_out]``; coef as in ``piece.py``.
    """
    beta, gamma, C, beta_n, gamma_n, c_n, h_n, m_n = coef
    B, H, n, DK = q.shape
    DV = v.shape[-1]
    L = len(W)
    BN = _block(n)

    coef_bg, Cp, cn, mn, scal = pack_coefficients(coef, L, B * H, n, BN)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    G, W, S = ([t.contiguous() for t in ts] for ts in (G, W, S))
    o = torch.empty(B, H, n, DV, dtype=v.dtype, device=v.device)
    W_new, S_new = [torch.empty_like(w) for w in W], [torch.empty_like(s) for s in S]
    second = (G[1], W[1], S[1], W_new[1], S_new[1]) if L == 2 else (G[0], W[0], S[0], W_new[0], S_new[0])
    lnw, lnb = norm if norm is not None else (q, q)  # unused pointers when NORM is off
    DH = W[0].shape[-1] if L == 2 else DV
    _piece_fwd_kernel[(B * H,)](
        q, k, v, o, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        coef_bg, Cp, cn, mn, scal, G[0], W[0], S[0], W_new[0], S_new[0], *second,
        lnw.contiguous(), lnb.contiguous(), n, B * H, H,
        L=L, BN=BN, DK=DK, DH=DH, DV=DV, ACT=_ACT[act], NORM=norm is not None, RES=residual)
    return o, W_new, S_new

