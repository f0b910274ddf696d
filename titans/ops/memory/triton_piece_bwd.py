"""Triton backward of one piece of the dual form: ``piece_backward_triton``, same signature as
``piece.piece_backward`` (README §6), one launch per piece.

Each program (a batch row and head) recomputes the piece's forward from its inputs (keys' path and errors, the
queries' path), then runs the five steps of README §6: the output and query path layer by layer, the weights and
momentum after the piece, the delta chain with its second-order activation term, the LayerNorm backward that
produced the last delta, and the key path. float32 throughout; the LayerNorm parameters' gradients are summed per
program and reduced over the batch afterwards (deterministic, no atomics). Same scope as the forward kernel
(``triton_piece.py``).
"""

from __future__ import annotations

import torch

from .triton_piece import _ACT, HAS_TRITON, _block, pack_coefficients

if HAS_TRITON:
    import triton
    import triton.language as tl

    from .triton_piece import _act, _act_bwd, _load_mat, _load_rows, _mm, _store_mat

    @triton.jit
    def _grad2(z, ACT: tl.constexpr):
        """``sigma''(z)``."""
        if ACT == 0:
            return tl.exp(-0.5 * z * z) * 0.3989422804014327 * (2.0 - z * z)
        elif ACT == 1:
            s = tl.sigmoid(z)
            return s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))
        else:
            return z * 0.0

    @triton.jit
    def _ln(z, DV: tl.constexpr):
        """``(xhat, rstd)`` of a LayerNorm over rows."""
        mu = tl.sum(z, axis=1) / DV
        xc = z - mu[:, None]
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / DV + 1e-5)
        return xc * rstd[:, None], rstd

    @triton.jit
    def _ln_bwd(g, xhat, rstd, lw, DV: tl.constexpr):
        gh = g * lw[None, :]
        return rstd[:, None] * (gh - (tl.sum(gh, axis=1) / DV)[:, None]
                                - xhat * (tl.sum(gh * xhat, axis=1) / DV)[:, None])

    @triton.jit
    def _query_layer(x, a, delta, W, S, coef_ptr, C_ptr, rn, n, BN: tl.constexpr):
        """Recompute one layer of the query path: ``(zeta, P)``."""
        mask_n = rn < n
        beta = tl.load(coef_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)
        gamma = tl.load(coef_ptr + BN + rn, mask=mask_n, other=0.0).to(tl.float32)
        C = tl.load(C_ptr + rn[:, None] * BN + rn[None, :], mask=mask_n[:, None] & mask_n[None, :],
                    other=0.0).to(tl.float32)
        P = _mm(x, tl.trans(a))
        return beta[:, None] * _mm(x, W) + gamma[:, None] * _mm(x, S) - _mm(C * P, delta), P

    @triton.jit
    def _layer_bwd(dz, X, A, Dl, W, S, P, coef_ptr, C_ptr, dcoef_ptr, dC_ptr, rn, n, BN: tl.constexpr):
        """README §6 step 1 for one layer: ``(dX, dD, da, dW, dS)``; stores dbeta, dgamma, dC."""
        mask_n = rn < n
        beta = tl.load(coef_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)
        gamma = tl.load(coef_ptr + BN + rn, mask=mask_n, other=0.0).to(tl.float32)
        mask_nn = mask_n[:, None] & mask_n[None, :]
        C = tl.load(C_ptr + rn[:, None] * BN + rn[None, :], mask=mask_nn, other=0.0).to(tl.float32)
        YW = _mm(dz, tl.trans(W))
        YS = _mm(dz, tl.trans(S))
        tl.store(dcoef_ptr + rn, tl.sum(X * YW, axis=1), mask=mask_n)
        tl.store(dcoef_ptr + BN + rn, tl.sum(X * YS, axis=1), mask=mask_n)
        dW = _mm(tl.trans(beta[:, None] * X), dz)
        dS = _mm(tl.trans(gamma[:, None] * X), dz)
        dCP = _mm(dz, tl.trans(Dl))
        lower = (rn[:, None] >= rn[None, :]) & mask_nn
        tl.store(dC_ptr + rn[:, None] * BN + rn[None, :], tl.where(lower, -dCP * P, 0.0))
        dP = dCP * C
        dD = -_mm(tl.trans(C * P), dz)
        dX = beta[:, None] * YW + gamma[:, None] * YS - _mm(dP, A)
        da = -_mm(tl.trans(dP), X)
        return dX, dD, da, dW, dS

    @triton.jit
    def _end_bwd(A, Dl, W, S, dWp, dSp, dW, dS, dD, da, scal_ptr, cn_ptr, mn_ptr, dscal_ptr, dcn_ptr, dmn_ptr,
                 dW_ptr, dS_ptr, rn, n, DI: tl.constexpr, DO: tl.constexpr):
        """README §6 step 2 (the weights and momentum after the piece) for one layer: ``(dD, da)``."""
        mask_n = rn < n
        beta_n = tl.load(scal_ptr).to(tl.float32)
        gamma_n = tl.load(scal_ptr + 1).to(tl.float32)
        h_n = tl.load(scal_ptr + 2).to(tl.float32)
        cn = tl.load(cn_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)
        mn = tl.load(mn_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)
        _store_mat(dW_ptr, dW + beta_n * dWp, DI, DO)
        _store_mat(dS_ptr, dS + gamma_n * dWp + h_n * dSp, DI, DO)
        tl.store(dscal_ptr, tl.sum(tl.sum(dWp * W, axis=1), axis=0))
        tl.store(dscal_ptr + 1, tl.sum(tl.sum(dWp * S, axis=1), axis=0))
        tl.store(dscal_ptr + 2, tl.sum(tl.sum(dSp * S, axis=1), axis=0))
        E1 = _mm(A, dWp)
        E2 = _mm(A, dSp)
        tl.store(dcn_ptr + rn, -tl.sum(E1 * Dl, axis=1), mask=mask_n)
        tl.store(dmn_ptr + rn, -tl.sum(E2 * Dl, axis=1), mask=mask_n)
        dD = dD - cn[:, None] * E1 - mn[:, None] * E2
        da = da - cn[:, None] * _mm(Dl, tl.trans(dWp)) - mn[:, None] * _mm(Dl, tl.trans(dSp))
        return dD, da

    @triton.jit
    def _piece_bwd_kernel(q_ptr, k_ptr, v_ptr, do_ptr, dq_ptr, dk_ptr, dv_ptr, sq_b, sq_h, sq_n, sk_b, sk_h, sk_n,
                          sv_b, sv_h, sv_n, sdo_b, sdo_h, sdo_n,
                          coef_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr, dcoef_ptr, dC_ptr, dcn_ptr, dmn_ptr, dscal_ptr,
                          G0_ptr, W0_ptr, S0_ptr, dW0p_ptr, dS0p_ptr, dG0_ptr, dW0_ptr, dS0_ptr,
                          G1_ptr, W1_ptr, S1_ptr, dW1p_ptr, dS1p_ptr, dG1_ptr, dW1_ptr, dS1_ptr,
                          lnw_ptr, lnb_ptr, dlnw_ptr, dlnb_ptr, n, BH, H,
                          L: tl.constexpr, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr,
                          ACT: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr):
        """The hand-written backward of one piece (``piece.piece_backward``, README §6), recomputing the forward."""
        pid = tl.program_id(0)
        b = pid // H
        h = pid % H
        rn = tl.arange(0, BN)
        mask_n = rn < n
        rk = tl.arange(0, DK)
        rv = tl.arange(0, DV)
        q = _load_rows(q_ptr, b, h, sq_b, sq_h, sq_n, rn, mask_n, DK)
        k = _load_rows(k_ptr, b, h, sk_b, sk_h, sk_n, rn, mask_n, DK)
        v = _load_rows(v_ptr, b, h, sv_b, sv_h, sv_n, rn, mask_n, DV)
        do = _load_rows(do_ptr, b, h, sdo_b, sdo_h, sdo_n, rn, mask_n, DV)
        D0: tl.constexpr = DH if L == 2 else DV
        G0 = _load_mat(G0_ptr + pid * DK * D0, DK, D0)
        W0 = _load_mat(W0_ptr + pid * DK * D0, DK, D0)
        S0 = _load_mat(S0_ptr + pid * DK * D0, DK, D0)
        off0 = pid  # layer 0's row in the [L, B*H, ...] coefficient tensors
        off1 = BH + pid
        if NORM:
            lw = tl.load(lnw_ptr + h * DV + rv).to(tl.float32)
            lb = tl.load(lnb_ptr + h * DV + rv).to(tl.float32)

        # Recompute the keys' path and errors.
        z0 = _mm(k, G0)
        if L == 2:
            G1 = _load_mat(G1_ptr + pid * DH * DV, DH, DV)
            W1 = _load_mat(W1_ptr + pid * DH * DV, DH, DV)
            S1 = _load_mat(S1_ptr + pid * DH * DV, DH, DV)
            a1 = _act(z0, ACT)
            zk = _mm(a1, G1)
        else:
            zk = z0
        if NORM:
            xk, rk_ = _ln(zk, DV)
            y = xk * lw[None, :] + lb[None, :]
        else:
            y = zk
        if RES:
            y = y + k
        e = tl.where(mask_n[:, None], 2.0 * (y - v), 0.0)
        if NORM:  # noqa: SIM108 (a static if on a constexpr: Triton compiles one branch)
            dlast = _ln_bwd(e, xk, rk_, lw, DV)
        else:
            dlast = e

        # Recompute the queries' path, then step 1 of the backward (output and query path, layers L..1).
        if RES:  # noqa: SIM108
            dq = do
        else:
            dq = do * 0.0
        if L == 2:
            t0 = _mm(dlast, tl.trans(G1))
            delta0 = _act_bwd(t0, z0, ACT)
            zeta0, P0 = _query_layer(q, k, delta0, W0, S0, coef_ptr + off0 * 2 * BN, C_ptr + off0 * BN * BN, rn, n,
                                     BN)
            x1 = _act(zeta0, ACT)
            zq, P1 = _query_layer(x1, a1, dlast, W1, S1, coef_ptr + off1 * 2 * BN, C_ptr + off1 * BN * BN, rn, n,
                                  BN)
        else:
            delta0 = dlast
            zq, P0 = _query_layer(q, k, dlast, W0, S0, coef_ptr + off0 * 2 * BN, C_ptr + off0 * BN * BN, rn, n, BN)
        if NORM:
            xq, rq = _ln(zq, DV)
            dz = _ln_bwd(do, xq, rq, lw, DV)
            dlnw = tl.sum(do * xq, axis=0)
            dlnb = tl.sum(do, axis=0)
        else:
            dz = do
        if L == 2:
            dX1, dD1, da1, dW1, dS1 = _layer_bwd(dz, x1, a1, dlast, W1, S1, P1, coef_ptr + off1 * 2 * BN,
                                                 C_ptr + off1 * BN * BN, dcoef_ptr + off1 * 2 * BN,
                                                 dC_ptr + off1 * BN * BN, rn, n, BN)
            dz = _act_bwd(dX1, zeta0, ACT)
        dX0, dD0, da0, dW0, dS0 = _layer_bwd(dz, q, k, delta0, W0, S0, P0, coef_ptr + off0 * 2 * BN,
                                             C_ptr + off0 * BN * BN, dcoef_ptr + off0 * 2 * BN,
                                             dC_ptr + off0 * BN * BN, rn, n, BN)
        dq = dq + dX0

        # Step 2: the weights and momentum after the piece.
        dW0p = _load_mat(dW0p_ptr + pid * DK * D0, DK, D0)
        dS0p = _load_mat(dS0p_ptr + pid * DK * D0, DK, D0)
        dD0, da0 = _end_bwd(k, delta0, W0, S0, dW0p, dS0p, dW0, dS0, dD0, da0, scal_ptr + off0 * 3,
                            cn_ptr + off0 * BN, mn_ptr + off0 * BN, dscal_ptr + off0 * 3, dcn_ptr + off0 * BN,
                            dmn_ptr + off0 * BN, dW0_ptr + pid * DK * D0, dS0_ptr + pid * DK * D0, rn, n, DK, D0)
        if L == 2:
            dW1p = _load_mat(dW1p_ptr + pid * DH * DV, DH, DV)
            dS1p = _load_mat(dS1p_ptr + pid * DH * DV, DH, DV)
            dD1, da1 = _end_bwd(a1, dlast, W1, S1, dW1p, dS1p, dW1, dS1, dD1, da1, scal_ptr + off1 * 3,
                                cn_ptr + off1 * BN, mn_ptr + off1 * BN, dscal_ptr + off1 * 3, dcn_ptr + off1 * BN,
                                dmn_ptr + off1 * BN, dW1_ptr + pid * DH * DV, dS1_ptr + pid * DH * DV, rn, n, DH, DV)
            # Step 3: the delta chain delta_0 = (delta_1 G_1^T) * sigma'(z_0), second order in z_0.
            dt = _act_bwd(dD0, z0, ACT)
            dzk0 = dD0 * t0 * _grad2(z0, ACT)
            dDlast = dD1 + _mm(dt, G1)
            dG1 = _mm(tl.trans(dt), dlast)
        else:
            dDlast = dD0

        # Step 4: through the LayerNorm backward that produced delta_L, then e = 2 (out - v).
        if NORM:
            ghat = e * lw[None, :]
            rho = rk_[:, None] * dDlast
            m_rx = tl.sum(rho * xk, axis=1) / DV
            dghat = rho - (tl.sum(rho, axis=1) / DV)[:, None] - xk * m_rx[:, None]
            dxhat = -rho * (tl.sum(ghat * xk, axis=1) / DV)[:, None] - ghat * m_rx[:, None]
            dr = tl.sum(dDlast * dlast, axis=1) / rk_
            de = dghat * lw[None, :]
            dlnw = dlnw + tl.sum(dghat * e, axis=0)
        else:
            de = dDlast
        dout = tl.where(mask_n[:, None], 2.0 * de, 0.0)
        dv = -dout
        if RES:  # noqa: SIM108
            dk = dout
        else:
            dk = dout * 0.0
        if NORM:
            dxhat = dxhat + dout * lw[None, :]
            dlnw = dlnw + tl.sum(dout * xk, axis=0)
            dlnb = dlnb + tl.sum(dout, axis=0)
            df = rk_[:, None] * (dxhat - (tl.sum(dxhat, axis=1) / DV)[:, None]
                                 - xk * (tl.sum(dxhat * xk, axis=1) / DV)[:, None])
            df = df - (dr * rk_ * rk_)[:, None] * xk / DV
            tl.store(dlnw_ptr + pid * DV + rv, dlnw)
            tl.store(dlnb_ptr + pid * DV + rv, dlnb)
        else:
            df = dout

        # Step 5: the key path, layers L..1.
        if L == 2:
            _store_mat(dG1_ptr + pid * DH * DV, dG1 + _mm(tl.trans(a1), df), DH, DV)
            da1 = da1 + _mm(df, tl.trans(G1))
            dzk0 = dzk0 + _act_bwd(da1, z0, ACT)
            _store_mat(dG0_ptr + pid * DK * DH, _mm(tl.trans(k), dzk0), DK, DH)
            da0 = da0 + _mm(dzk0, tl.trans(G0))
        else:
            _store_mat(dG0_ptr + pid * DK * DV, _mm(tl.trans(k), df), DK, DV)
            da0 = da0 + _mm(df, tl.trans(G0))
        dk = dk + da0
        tl.store(dq_ptr + b * sq_b + h * sq_h + rn[:, None] * sq_n + rk[None, :], dq.to(dq_ptr.dtype.element_ty),
                 mask=mask_n[:, None])
        tl.store(dk_ptr + b * sk_b + h * sk_h + rn[:, None] * sk_n + rk[None, :], dk.to(dk_ptr.dtype.element_ty),
                 mask=mask_n[:, None])
        tl.store(dv_ptr + b * sv_b + h * sv_h + rn[:, None] * sv_n + rv[None, :], dv.to(dv_ptr.dtype.element_ty),
                 mask=mask_n[:, None])


def piece_backward_triton(do, dWp, dSp, q, k, v, coef, G, W, S, norm, act, residual):
    """Same contract as :func:`titans.ops.memory.piece.piece_backward`:
    ``(dq, dk, dv, dcoef, dG, dW, dS, (dlnw, dlnb))``, one launch for the whole piece."""
    beta, gamma, C, beta_n, gamma_n, c_n, h_n, m_n = coef
    B, H, n, DK = q.shape
    DV = v.shape[-1]
    L = len(W)
    BN = _block(n)
    f32 = torch.float32
    BH = B * H

    coef_bg, Cp, cn, mn, scal = pack_coefficients(coef, L, BH, n, BN)
    dcoef_bg, dC = torch.zeros_like(coef_bg), torch.zeros_like(Cp)
    dcn, dmn, dscal = torch.zeros_like(cn), torch.zeros_like(mn), torch.zeros_like(scal)
    q, k, v, do = (x.contiguous() for x in (q, k, v, do))
    G, W, S, dWp, dSp = ([t.contiguous() for t in ts] for ts in (G, W, S, dWp, dSp))
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dG, dW, dS = ([torch.empty_like(w) for w in W] for _ in range(3))
    lnw, lnb = norm if norm is not None else (q, q)  # unused pointers when NORM is off
    dln = torch.zeros(2, BH, DV, dtype=f32, device=q.device)
    i1 = 1 if L == 2 else 0
    DH = W[0].shape[-1] if L == 2 else DV
    _piece_bwd_kernel[(BH,)](
        q, k, v, do, dq, dk, dv, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2),
        coef_bg, Cp, cn, mn, scal, dcoef_bg, dC, dcn, dmn, dscal,
        G[0], W[0], S[0], dWp[0], dSp[0], dG[0], dW[0], dS[0],
        G[i1], W[i1], S[i1], dWp[i1], dSp[i1], dG[i1], dW[i1], dS[i1],
        lnw.contiguous(), lnb.contiguous(), dln[0], dln[1], n, BH, H,
        L=L, BN=BN, DK=DK, DH=DH, DV=DV, ACT=_ACT[act], NORM=norm is not None, RES=residual)
    shape = (L, B, H)
    dcoef = (dcoef_bg[:, :, 0, :n].reshape(*shape, n).to(beta.dtype),
             dcoef_bg[:, :, 1, :n].reshape(*shape, n).to(gamma.dtype),
             dC[..., :n, :n].reshape(*shape, n, n).to(C.dtype),
             dscal[..., 0].reshape(shape).to(beta_n.dtype), dscal[..., 1].reshape(shape).to(gamma_n.dtype),
             dcn[..., :n].reshape(*shape, n).to(c_n.dtype), dscal[..., 2].reshape(shape).to(h_n.dtype),
             dmn[..., :n].reshape(*shape, n).to(m_n.dtype))
    dnorm = (None, None)
    if norm is not None:  # per-(batch, head) partial sums, reduced here (deterministic, no atomics)
        dnorm = tuple(x.reshape(B, H, DV).sum(0).to(norm[0].dtype) for x in dln)
    return dq, dk, dv, dcoef, dG, dW, dS, dnorm
