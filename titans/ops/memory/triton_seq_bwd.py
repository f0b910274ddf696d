"""Triton backward of the chunk form over a whole sequence: one launch, one program per (batch row, head).

Each program walks its chunks in reverse. For chunk ``c`` it reads the chunk's starting weights and momentum and
the activations the forward saved (``triton_seq.saved_width``: the keys through the memory, from which the errors
``delta_L`` follow; the output before its norm, for the norm's backward; at depth 2 ``P_1``), and applies the five
steps of README §6 (``piece.piece_backward``) with the gradients of the state after the chunk taken from a two-slot
buffer, where it leaves the gradients of the state before the chunk for chunk ``c - 1``. Like the forward, the
weights are streamed in tiles of ``TH`` hidden columns (depth 2) or input rows (depth 1); the passes over the tiles
are

* P (``KernelConfig.pre``, the default where it was faster; ``triton_pre.py``): before C, the products of C (and
  at depth 1 of both loops) that need nothing the loop accumulates, in wide tiles into a scratch the loops read;
* C: per tile, the query path backward of both layers, the end-of-chunk terms and the delta chain; the gradients
  of ``S`` are complete here, those of ``W`` lack the key path, and two ``[chunk, TH]`` partials are stashed (at
  depth 2 with ``KernelConfig.phased``, five loops through a scratch: ``triton_phased_bwd.py``);
* D: after the LayerNorm backward at the keys (which needs all tiles of C), the key path, completing ``dW``.
(Passes A and B, the keys' and the queries' paths recomputed, went when the forward began to save what they gave.)

What a pass accumulates over the tiles is held in registers through it, and at 64-row chunks the kernels spill: so
the query path's two shares of ``dq`` are summed into one accumulator, the end-of-chunk terms' products go straight
into ``dD`` with their row sums taken per tile (``sum((a dW) * delta) = sum(a * (delta dW^T))``), and every product
is its own ``acc += dot`` statement with signs and row scales on an operand (Triton then accumulates in the product;
a sum, difference or scaling of products first takes a temporary as large as the accumulator; ``C P`` and ``dP`` are
negated once per chunk for that). Values needed only after a loop are held, not recomputed or reloaded after it:
in the one-loop pass C that spilled more (``benchmarks/triton_resources.py``).

The per-chunk gradients of the decay coefficients are written out (the gates' gradients follow from them by
autograd through ``chunk.decay_coefficients``); the LayerNorm parameters' gradients are summed per program and
reduced afterwards (deterministic, no atomics).
"""

from __future__ import annotations

import torch

from .triton_config import config_for, launch, pre_precision, q_transposed
from .triton_phased_bwd import scratch_width
from .triton_pre import pre_scratch, pre_width
from .triton_seq import _ACT, HAS_TRITON, dims

if HAS_TRITON:
    import triton
    import triton.language as tl

    from .triton_blocks import (
        _act,
        _act_bwd,
        _coefs,
        _errors,
        _grad2,
        _head_rows,
        _key_ln_bwd,
        _mm,
        _norm_params,
        _out_ln_bwd,
        _prod,
        _put,
        _put_coef_grads,
        _put_square,
        _rows,
        _saved,
        _square,
        _tile,
        _zero_coef_grads,
    )
    from .triton_phased_bwd import _chunk
    from .triton_pre import _pre_base, _pre_pass1, _pre_pass1_late, _pre_pass2

    # Sizes are not specialized (one compiled kernel serves every length and batch).
    @triton.jit(do_not_specialize=["T", "N", "NSLOT", "BH", "H", "CHUNK"])
    def _seq_bwd_kernel(q_ptr, k_ptr, v_ptr, do_ptr, dq_ptr, dk_ptr, dv_ptr, sq_b, sq_h, sq_t, sk_b, sk_h, sk_t,
                        sv_b, sv_h, sv_t, sdo_b, sdo_h, sdo_t, sg_b, sg_h, sg_t,
                        bg_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr, dbg_ptr, dC_ptr, dcn_ptr, dmn_ptr, dscal_ptr,
                        W0_ptr, S0_ptr, W1_ptr, S1_ptr, dW0_ptr, dS0_ptr, dW1_ptr, dS1_ptr, stash_ptr, acts_ptr,
                        pre_ptr, ph_ptr, lnw_ptr, lnb_ptr, dln_ptr, T, N, NSLOT, BH, H, CHUNK,
                        L: tl.constexpr, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr,
                        TH: tl.constexpr, ACT: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr,
                        PREC: tl.constexpr, QT: tl.constexpr, PRE: tl.constexpr, TP: tl.constexpr,
                        PPREC: tl.constexpr, PHASED: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)  # 64-bit offsets: the saved states pass 2**31 elements at 8K x 128
        b, h, qb, kb, vb = _head_rows(pid, H, q_ptr, sq_b, sq_h, k_ptr, sk_b, sk_h, v_ptr, sv_b, sv_h)
        rn = tl.arange(0, BN)
        rk_ = tl.arange(0, DK)
        rv = tl.arange(0, DV)
        dob = do_ptr + b * sdo_b + h * sdo_h
        # dq, dk, dv: float32 buffers of one layout (strides sg_*)
        dqb = dq_ptr + b * sg_b + h * sg_h
        dkb = dk_ptr + b * sg_b + h * sg_h
        dvb = dv_ptr + b * sg_b + h * sg_h
        lower = rn[:, None] >= rn[None, :]
        lw, lb = _norm_params(lnw_ptr, lnb_ptr, h, DV, NORM)
        dlnw_acc = tl.zeros([DV], dtype=tl.float32)
        dlnb_acc = tl.zeros([DV], dtype=tl.float32)
        D0: tl.constexpr = DH if L == 2 else DV
        for cc in range(N):
            c = N - 1 - cc
            t = c * CHUNK + rn
            mask = (rn < CHUNK) & (t < T)
            q = _rows(qb, sq_t, t, mask, 0, DK)
            k = _rows(kb, sk_t, t, mask, 0, DK)
            v = _rows(vb, sv_t, t, mask, 0, DV)
            do = _rows(dob, sdo_t, t, mask, 0, DV)
            si = pid * NSLOT + c
            gi = pid * 2 + (c + 1) % 2  # gradients of the state after the chunk
            go = pid * 2 + c % 2  # ... and before it (written here)
            W0i = W0_ptr + si * DK * D0
            S0i = S0_ptr + si * DK * D0
            W1i = W1_ptr + si * DH * DV
            S1i = S1_ptr + si * DH * DV
            dW0i = dW0_ptr + gi * DK * D0
            dS0i = dS0_ptr + gi * DK * D0
            dW0o = dW0_ptr + go * DK * D0
            dS0o = dS0_ptr + go * DK * D0
            dW1i = dW1_ptr + gi * DH * DV
            dS1i = dS1_ptr + gi * DH * DV
            dW1o = dW1_ptr + go * DH * DV
            dS1o = dS1_ptr + go * DH * DV
            i0 = pid * N + c
            beta0, gamma0, C0, cn0, mn0, bn0, gn0, hn0 = _coefs(bg_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr, i0, BN)

            # The errors, from the keys through the memory that the forward saved; its output before the norm.
            zk = _tile(_saved(acts_ptr, i0, 0, L, NORM, BN, DV), 0, 0, DV, BN, DV)
            dlast, e, xk, rk = _errors(zk, k, v, lw, lb, mask, DV, NORM, RES)
            if NORM:  # noqa: SIM108 (a static if on a constexpr: Triton compiles one branch)
                zq = _tile(_saved(acts_ptr, i0, 1, L, NORM, BN, DV), 0, 0, DV, BN, DV)
            else:  # unused without the norm
                zq = do
            P0 = _mm(q, tl.trans(k), PREC)
            nCP0 = -(C0 * P0)  # negated once: a product subtracted from a sum is not fused, one added is
            dbeta0, dgamma0, dcn0, dmn0, dbn0, dgn0, dhn0 = _zero_coef_grads(BN)

            if L == 2:
                i1 = (BH + pid) * N + c
                beta1, gamma1, C1, cn1, mn1, bn1, gn1, hn1 = _coefs(bg_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr, i1, BN)
                P1 = _square(_saved(acts_ptr, i0, 2, L, NORM, BN, DV), 0, BN)
                nCP1 = -(C1 * P1)
                dz1, dlw, dlb = _out_ln_bwd(zq, do, lw, DV, NORM)
                dlnw_acc += dlw
                dlnb_acc += dlb
                # Step 1 of layer 1, the parts that need no tile.
                dCP1 = _mm(dz1, tl.trans(dlast), PREC)
                _put_square(dC_ptr, i1, tl.where(lower, -dCP1 * P1, 0.0), BN)
                ndP1 = -(dCP1 * C1)
                if not PHASED:  # (in passes, _chunk forms it after them)
                    dD1 = _mm(tl.trans(nCP1), dz1, PREC)
                # What pass C accumulates over the tiles is kept small (every [BN, D] accumulator is registers held
                # through the loop): the query path's share of dq in one sum, the end-of-chunk terms' products folded
                # into dD1 and their row sums taken per tile.
                dqa = tl.zeros([BN, DK], dtype=tl.float32)  # (beta0 dz0) W0^T + (gamma0 dz0) S0^T
                dCP0 = tl.zeros([BN, BN], dtype=tl.float32)
                da0 = tl.zeros([BN, DK], dtype=tl.float32)
                dbeta1, dgamma1, dcn1, dmn1, dbn1, dgn1, dhn1 = _zero_coef_grads(BN)
                pre = _pre_base(pre_ptr, pid, L, BN, DK, DH, DV)
                if PRE:  # Pass P: the products of pass C that need nothing it accumulates, in wide tiles.
                    _pre_pass2(pre, dlast, dz1, kb + t * sk_t, qb + t * sq_t, mask, W0i, S0i, W1i, S1i, dW0i, dS0i,
                               dW1i, dS1i, BN, DK, DH, DV, TP, PPREC)
                if PHASED:  # KernelConfig.phased: passes C and D in loops (triton_phased_bwd.py)
                    # the chunk's first token and how many of its rows are tokens
                    t0 = c * CHUNK
                    nv = tl.minimum(CHUNK, T - t0)
                    dlw, dlb = _chunk(
                        kb, sk_t, qb, sq_t, vb, sv_t, dob, sdo_t, dqb, dkb, dvb, sg_t, t, t0, nv, mask,
                        ph_ptr + pid * (5 * BN * DH + 2 * BN * DV + 2 * BN * BN), pre, stash_ptr + pid * 2 * BN * DH,
                        bg_ptr + i0 * 2 * BN, bg_ptr + i1 * 2 * BN, C_ptr, dC_ptr, i0, i1,
                        _saved(acts_ptr, i0, 0, L, NORM, BN, DV), _saved(acts_ptr, i0, 2, L, NORM, BN, DV), W0i, S0i,
                        W1i, S1i, dW0i, dS0i, dW1i, dS1i, dW0o, dS0o, dW1o, dS1o, dbg_ptr, dcn_ptr, dmn_ptr,
                        dscal_ptr, beta0, gamma0, cn0, mn0, bn0, gn0, hn0, beta1, gamma1, cn1, mn1, bn1, gn1, hn1,
                        dlast, dz1, nCP0, ndP1, lw, lb, BN, DK, DH, DV, TH, ACT, NORM, RES, PREC, PRE)
                    dlnw_acc += dlw
                    dlnb_acc += dlb
                else:
                    # Pass C: per tile of the hidden width.
                    for j in range(DH // TH):
                        G0j = _tile(W0i, 0, j * TH, DH, DK, TH)
                        S0j = _tile(S0i, 0, j * TH, DH, DK, TH)
                        W1j = _tile(W1i, j * TH, 0, DV, TH, DV)
                        S1j = _tile(S1i, j * TH, 0, DV, TH, DV)
                        z0 = _prod(k, G0j, pre, 0, j, PRE, BN, DH, TH, PREC)
                        a1 = _act(z0, ACT)
                        t0 = _prod(dlast, tl.trans(W1j), pre, 1, j, PRE, BN, DH, TH, PREC)
                        d0 = _act_bwd(t0, z0, ACT)
                        qG = _prod(q, G0j, pre, 2, j, PRE, BN, DH, TH, PREC)
                        qS = _prod(q, S0j, pre, 3, j, PRE, BN, DH, TH, PREC)
                        zeta0 = beta0[:, None] * qG + gamma0[:, None] * qS + _mm(nCP0, d0, PREC)
                        x1 = _act(zeta0, ACT)
                        # Layer 1 (X = x1, A = a1, delta = dlast), this tile of its input rows.
                        YW1 = _prod(dz1, tl.trans(W1j), pre, 4, j, PRE, BN, DH, TH, PREC)
                        YS1 = _prod(dz1, tl.trans(S1j), pre, 5, j, PRE, BN, DH, TH, PREC)
                        dbeta1 += tl.sum(x1 * YW1, axis=1)
                        dgamma1 += tl.sum(x1 * YS1, axis=1)
                        dz0 = _act_bwd(beta1[:, None] * YW1 + gamma1[:, None] * YS1 + _mm(ndP1, a1, PREC), zeta0, ACT)
                        da1 = _mm(tl.trans(ndP1), x1, PREC)
                        # Layer 0 (X = q, A = k, delta = d0), this tile of its output columns. sum(q * (dz0 W0^T)) is
                        # sum(dz0 * (q W0)), per tile.
                        dbeta0 += tl.sum(dz0 * qG, axis=1)
                        dgamma0 += tl.sum(dz0 * qS, axis=1)
                        bdz0 = beta0[:, None] * dz0
                        gdz0 = gamma0[:, None] * dz0
                        dqa += _mm(bdz0, tl.trans(G0j), PREC)
                        dqa += _mm(gdz0, tl.trans(S0j), PREC)
                        dCP0 += _mm(dz0, tl.trans(d0), PREC)
                        dWp0 = _tile(dW0i, 0, j * TH, DH, DK, TH)
                        dSp0 = _tile(dS0i, 0, j * TH, DH, DK, TH)
                        F1 = _prod(k, dWp0, pre, 6, j, PRE, BN, DH, TH, PREC)
                        F2 = _prod(k, dSp0, pre, 7, j, PRE, BN, DH, TH, PREC)
                        dcn0 -= tl.sum(F1 * d0, axis=1)
                        dmn0 -= tl.sum(F2 * d0, axis=1)
                        dD0 = _mm(tl.trans(nCP0), dz0, PREC) - cn0[:, None] * F1 - mn0[:, None] * F2
                        da0 += _mm(-cn0[:, None] * d0, tl.trans(dWp0), PREC)
                        da0 += _mm(-mn0[:, None] * d0, tl.trans(dSp0), PREC)
                        dbn0 += tl.sum(tl.sum(dWp0 * G0j, axis=1), axis=0)
                        dgn0 += tl.sum(tl.sum(dWp0 * S0j, axis=1), axis=0)
                        dhn0 += tl.sum(tl.sum(dSp0 * S0j, axis=1), axis=0)
                        if QT:  # q^T (beta0 dz0): see q_transposed
                            _put(dW0o, 0, j * TH, DH, _mm(tl.trans(q), bdz0, PREC) + bn0 * dWp0, DK, TH)
                            _put(dS0o, 0, j * TH, DH, _mm(tl.trans(q), gdz0, PREC) + gn0 * dWp0 + hn0 * dSp0, DK, TH)
                        else:
                            _put(dW0o, 0, j * TH, DH, _mm(tl.trans(beta0[:, None] * q), dz0, PREC) + bn0 * dWp0, DK, TH)
                            _put(dS0o, 0, j * TH, DH, _mm(tl.trans(gamma0[:, None] * q), dz0, PREC) + gn0 * dWp0
                                 + hn0 * dSp0, DK, TH)
                        # Layer 1's end-of-chunk terms: sum((a1 dWp1) * dlast) is sum(a1 * (dlast dWp1^T)), per tile.
                        dWp1 = _tile(dW1i, j * TH, 0, DV, TH, DV)
                        dSp1 = _tile(dS1i, j * TH, 0, DV, TH, DV)
                        dlW1 = _prod(dlast, tl.trans(dWp1), pre, 8, j, PRE, BN, DH, TH, PREC)
                        dlS1 = _prod(dlast, tl.trans(dSp1), pre, 9, j, PRE, BN, DH, TH, PREC)
                        da1 -= cn1[:, None] * dlW1 + mn1[:, None] * dlS1
                        dcn1 -= tl.sum(a1 * dlW1, axis=1)
                        dmn1 -= tl.sum(a1 * dlS1, axis=1)
                        dbn1 += tl.sum(tl.sum(dWp1 * W1j, axis=1), axis=0)
                        dgn1 += tl.sum(tl.sum(dWp1 * S1j, axis=1), axis=0)
                        dhn1 += tl.sum(tl.sum(dSp1 * S1j, axis=1), axis=0)
                        # Step 3, the delta chain d0 = (dlast W1^T) * sigma'(z0), second order in z0.
                        dt = _act_bwd(dD0, z0, ACT)
                        dzk0 = dD0 * t0 * _grad2(z0, ACT)
                        dD1 += _mm(dt, W1j, PREC)
                        dD1 += _mm(-cn1[:, None] * a1, dWp1, PREC)
                        dD1 += _mm(-mn1[:, None] * a1, dSp1, PREC)
                        _put(dW1o, j * TH, 0, DV, _mm(tl.trans(beta1[:, None] * x1), dz1, PREC) + bn1 * dWp1
                             + _mm(tl.trans(dt), dlast, PREC), TH, DV)
                        _put(dS1o, j * TH, 0, DV, _mm(tl.trans(gamma1[:, None] * x1), dz1, PREC) + gn1 * dWp1
                             + hn1 * dSp1, TH, DV)
                        _put(stash_ptr + pid * 2 * BN * DH, 0, j * TH, DH, dzk0, BN, TH)
                        _put(stash_ptr + (pid * 2 + 1) * BN * DH, 0, j * TH, DH, da1, BN, TH)
                    _put_coef_grads(dbg_ptr, dcn_ptr, dmn_ptr, dscal_ptr, i1, dbeta1, dgamma1, dcn1, dmn1, dbn1, dgn1,
                                    dhn1, BN)
                    tl.debug_barrier()  # pass C's stores (dW tiles, stash) are read back below by other threads
                    _put_square(dC_ptr, i0, tl.where(lower, -dCP0 * P0, 0.0), BN)
                    ndP0 = -(dCP0 * C0)
                    dq = dqa + _mm(ndP0, k, PREC)
                    if RES:
                        dq += _rows(dob, sdo_t, t, mask, 0, DK)
                    tl.store(dqb + t[:, None] * sg_t + rk_[None, :], dq, mask=mask[:, None])
                    da0 += _mm(tl.trans(ndP0), q, PREC)
                    # Step 4, then pass D: the key path.
                    dout, df, dlw, dlb = _key_ln_bwd(dD1, dlast, e, xk, rk, lw, mask, DV, NORM)
                    dlnw_acc += dlw
                    dlnb_acc += dlb
                    dzb = stash_ptr + pid * 2 * BN * DH  # dzk0, then da1, as pass C stashed them
                    for j in range(DH // TH):
                        G0j = _tile(W0i, 0, j * TH, DH, DK, TH)
                        W1j = _tile(W1i, j * TH, 0, DV, TH, DV)
                        z0 = _prod(k, G0j, pre, 0, j, PRE, BN, DH, TH, PREC)
                        a1 = _act(z0, ACT)
                        dzk0 = _tile(dzb, 0, j * TH, DH, BN, TH)
                        da1 = _tile(dzb + BN * DH, 0, j * TH, DH, BN, TH)
                        _put(dW1o, j * TH, 0, DV, _tile(dW1o, j * TH, 0, DV, TH, DV) + _mm(tl.trans(a1), df, PREC), TH,
                             DV)
                        dzk0 += _act_bwd(da1 + _mm(df, tl.trans(W1j), PREC), z0, ACT)
                        _put(dW0o, 0, j * TH, DH, _tile(dW0o, 0, j * TH, DH, DK, TH) + _mm(tl.trans(k), dzk0, PREC), DK,
                             TH)
                        da0 += _mm(dzk0, tl.trans(G0j), PREC)
                    _put_coef_grads(dbg_ptr, dcn_ptr, dmn_ptr, dscal_ptr, i0, dbeta0, dgamma0, dcn0, dmn0, dbn0, dgn0,
                                    dhn0, BN)
                    if RES:  # noqa: SIM108
                        dk = dout + da0
                    else:
                        dk = da0
                    tl.store(dkb + t[:, None] * sg_t + rk_[None, :], dk, mask=mask[:, None])
            else:
                # Depth 1: X = q, A = k, delta = dlast; tiles of TH input rows (columns of q and k).
                dz, dlw, dlb = _out_ln_bwd(zq, do, lw, DV, NORM)
                dlnw_acc += dlw
                dlnb_acc += dlb
                dCP0 = _mm(dz, tl.trans(dlast), PREC)
                _put_square(dC_ptr, i0, tl.where(lower, -dCP0 * P0, 0.0), BN)
                ndP0 = -(dCP0 * C0)
                pre = _pre_base(pre_ptr, pid, L, BN, DK, DH, DV)
                if PRE:  # Pass P: the loops' products that need nothing they accumulate, in wide tiles.
                    _pre_pass1(pre, dz, dlast, ndP0, k, q, W0i, S0i, dW0i, dS0i, BN, DK, DV, TP, PPREC)
                # The end-of-chunk terms' products (cn0 k) dW and (mn0 k) dS go straight into dD0; their row sums
                # sum((k dW) * dlast) = sum(k * (dlast dW^T)) are taken in the second loop, which forms dlast dW^T.
                dD0 = _mm(tl.trans(nCP0), dz, PREC)
                for j in range(DK // TH):
                    qj = _rows(qb, sq_t, t, mask, j * TH, TH)
                    kj = _rows(kb, sk_t, t, mask, j * TH, TH)
                    Wj = _tile(W0i, j * TH, 0, DV, TH, DV)
                    Sj = _tile(S0i, j * TH, 0, DV, TH, DV)
                    dWp = _tile(dW0i, j * TH, 0, DV, TH, DV)
                    dSp = _tile(dS0i, j * TH, 0, DV, TH, DV)
                    YW = _prod(dz, tl.trans(Wj), pre, 0, j, PRE, BN, DK, TH, PREC)
                    YS = _prod(dz, tl.trans(Sj), pre, 1, j, PRE, BN, DK, TH, PREC)
                    dbeta0 += tl.sum(qj * YW, axis=1)
                    dgamma0 += tl.sum(qj * YS, axis=1)
                    dqj = beta0[:, None] * YW + gamma0[:, None] * YS + _prod(ndP0, kj, pre, 2, j, PRE, BN, DK, TH, PREC)
                    if RES:
                        dqj += _rows(dob, sdo_t, t, mask, j * TH, TH)
                    tl.store(dqb + t[:, None] * sg_t + (j * TH + tl.arange(0, TH))[None, :], dqj, mask=mask[:, None])
                    dD0 += _mm(-cn0[:, None] * kj, dWp, PREC)
                    dD0 += _mm(-mn0[:, None] * kj, dSp, PREC)
                    dbn0 += tl.sum(tl.sum(dWp * Wj, axis=1), axis=0)
                    dgn0 += tl.sum(tl.sum(dWp * Sj, axis=1), axis=0)
                    dhn0 += tl.sum(tl.sum(dSp * Sj, axis=1), axis=0)
                    _put(dW0o, j * TH, 0, DV, _mm(tl.trans(beta0[:, None] * qj), dz, PREC) + bn0 * dWp, TH, DV)
                    _put(dS0o, j * TH, 0, DV, _mm(tl.trans(gamma0[:, None] * qj), dz, PREC) + gn0 * dWp + hn0 * dSp,
                         TH, DV)
                dout, df, dlw, dlb = _key_ln_bwd(dD0, dlast, e, xk, rk, lw, mask, DV, NORM)
                dlnw_acc += dlw
                dlnb_acc += dlb
                if RES:  # the residual's share of dk, completed tile by tile below (same layout: no barrier)
                    tl.store(dkb + t[:, None] * sg_t + rv[None, :], dout, mask=mask[:, None])
                if PRE:  # the second loop's product with df
                    _pre_pass1_late(pre, df, W0i, BN, DK, DV, TP, PPREC)
                tl.debug_barrier()  # dW tiles (and dk) written above are read back below by other threads
                for j in range(DK // TH):
                    qj = _rows(qb, sq_t, t, mask, j * TH, TH)
                    kj = _rows(kb, sk_t, t, mask, j * TH, TH)
                    Wj = _tile(W0i, j * TH, 0, DV, TH, DV)
                    dWp = _tile(dW0i, j * TH, 0, DV, TH, DV)
                    dSp = _tile(dS0i, j * TH, 0, DV, TH, DV)
                    dlW = _prod(dlast, tl.trans(dWp), pre, 3, j, PRE, BN, DK, TH, PREC)
                    dlS = _prod(dlast, tl.trans(dSp), pre, 4, j, PRE, BN, DK, TH, PREC)
                    dcn0 -= tl.sum(kj * dlW, axis=1)
                    dmn0 -= tl.sum(kj * dlS, axis=1)
                    dkj = (_prod(df, tl.trans(Wj), pre, 5, j, PRE, BN, DK, TH, PREC)
                           + _prod(tl.trans(ndP0), qj, pre, 6, j, PRE, BN, DK, TH, PREC) - cn0[:, None] * dlW
                           - mn0[:, None] * dlS)
                    if RES:
                        dkj += _rows(dkb, sg_t, t, mask, j * TH, TH)
                    tl.store(dkb + t[:, None] * sg_t + (j * TH + tl.arange(0, TH))[None, :], dkj, mask=mask[:, None])
                    _put(dW0o, j * TH, 0, DV, _tile(dW0o, j * TH, 0, DV, TH, DV) + _mm(tl.trans(kj), df, PREC), TH, DV)
                _put_coef_grads(dbg_ptr, dcn_ptr, dmn_ptr, dscal_ptr, i0, dbeta0, dgamma0, dcn0, dmn0, dbn0, dgn0,
                                dhn0, BN)
            if not PHASED:  # (_chunk stores it)
                tl.store(dvb + t[:, None] * sg_t + rv[None, :], -dout, mask=mask[:, None])
            tl.debug_barrier()  # the previous chunk reads the state gradients written here
        tl.store(dln_ptr + pid * DV + rv, dlnw_acc)
        tl.store(dln_ptr + (BH + pid) * DV + rv, dlnb_acc)


def seq_backward_triton(do, dW_final, dS_final, q, k, v, packed, Ws, Ss, acts, norm, act, residual, chunk):
    """Gradients of :func:`triton_seq.seq_forward_triton` (run with ``save=True``).

    Args:
        do ``[B, H, T, Dv]``; dW_final, dS_final: L tensors ``[B, H, d_in, d_out]`` or None, the gradients of the
        final state; ``Ws``, ``Ss``, ``acts``: what the forward saved (every chunk's starting state, its
        activations ``[B*H, N, saved_width]``).
    Returns:
        ``(dq, dk, dv, dpacked, dW, dS, (dlnw, dlnb))``: token gradients in the tokens' dtype, gradients of the
        packed coefficients, of the initial weights and momentum (float32, ``[B, H, d_in, d_out]``), of the norm.
    """
    B, H, T, DK, DV, L, N, BN, BH, DH = dims(q, v, Ws, chunk)
    f32 = torch.float32
    dpacked = [torch.zeros_like(x) for x in packed]
    dWs, dSs = [], []
    for w, dwf, dsf in zip(Ws, dW_final, dS_final):
        gw = torch.zeros(BH, 2, *w.shape[-2:], dtype=f32, device=w.device)
        gs = torch.zeros_like(gw)
        if dwf is not None:
            gw[:, N % 2] = dwf.reshape(BH, *w.shape[-2:])
        if dsf is not None:
            gs[:, N % 2] = dsf.reshape(BH, *w.shape[-2:])
        dWs.append(gw), dSs.append(gs)
    grads = torch.zeros(3, B, H, T, max(DK, DV), dtype=f32, device=q.device)
    dq, dk, dv = grads[0], grads[1], grads[2]
    stash = torch.empty(BH, 2, BN, DH if L == 2 else 16, dtype=f32, device=q.device)
    cfg = config_for(True, L, BN, DK, DH, DV)
    pre = pre_scratch(L, BH, BN, DK, DH, DV, q.device) if cfg.pre else stash
    consts = backward_constants(L, BN, DK, DH, cfg, act, norm is not None, residual)
    ph = torch.empty(BH, scratch_width(BN, DH, DV), dtype=f32, device=q.device) if consts["PHASED"] else stash
    dln = torch.zeros(2, BH, DV, dtype=f32, device=q.device)
    lnw, lnb = (norm[0].contiguous(), norm[1].contiguous()) if norm is not None else (dln, dln)
    i1 = 1 if L == 2 else 0
    args = (
        q, k, v, do, dq, dk, dv, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2),
        dq.stride(0), dq.stride(1), dq.stride(2), *packed, *dpacked,
        Ws[0], Ss[0], Ws[i1], Ss[i1], dWs[0], dSs[0], dWs[i1], dSs[i1], stash, acts, pre, ph,
        lnw, lnb, dln, T, N, Ws[0].shape[1], BH, H, chunk)
    launch(_seq_bwd_kernel, (BH,), args, cfg=cfg, backward=True, L=L, BN=BN, DK=DK, DH=DH, DV=DV, **consts)
    dW = [g[:, 0].reshape(B, H, *g.shape[-2:]) for g in dWs]
    dS = [g[:, 0].reshape(B, H, *g.shape[-2:]) for g in dSs]
    dnorm = (None, None)
    if norm is not None:  # per-(batch, head) partial sums, reduced here (deterministic, no atomics)
        dnorm = tuple(x.reshape(B, H, DV).sum(0).to(norm[0].dtype) for x in dln)
    low = q.dtype
    return (dq[..., :DK].to(low), dk[..., :DK].to(low), dv[..., :DV].to(v.dtype), dpacked, dW, dS, dnorm)


def backward_constants(L: int, BN: int, DK: int, DH: int, cfg, act: str, norm: bool, residual: bool) -> dict:
    """The constants ``_seq_bwd_kernel`` takes besides the shape, tile and precision (``triton_config.launch`` adds
    those) under configuration ``cfg``; also what ``triton_compile`` compiles with."""
    return dict(ACT=_ACT[act], NORM=norm, RES=residual, QT=q_transposed(BN, DK), PRE=cfg.pre,
                TP=pre_width(BN, DH if L == 2 else DK), PPREC=pre_precision(cfg), PHASED=cfg.phased and L == 2)
