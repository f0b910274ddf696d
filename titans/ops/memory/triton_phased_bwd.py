"""The depth-2 backward's passes C and D in several loops each (``KernelConfig.phased`` on a backward
configuration), for ``triton_seq_bwd._seq_bwd_kernel``.

Why: pass C (per tile of the hidden width: both layers' query-path backward, the end-of-chunk terms, the delta
chain) holds through its loop four sums (the query path's ``dq``, the keys' ``da0``, ``dD1``, ``dCP0``: at head dim
128 with 64-row chunks ``[64, 128]`` three times and ``[64, 64]``), the chunk-wide operands every tile multiplies
(q, k, ``delta_L``, the output's gradient ``dz1``, ``-C_0 P_0``, ``-C_1 dP_1``) and a tile's twenty products. Here
it is five loops over the tiles, and what crosses between them goes through a per-program scratch in global memory
(:func:`scratch_width`), the chunk-wide operands read per tile from it (kept by :func:`_keep`) or from q and k:

1. (:func:`_pass1`) the query path's backward through both layers to ``dz0``, the delta chain's ``dt``, pass D's
   ``dzk0`` (stashed) and the row sums that need them; keeps ``dz0``, ``delta_0``, ``dt``, ``a1``, ``x1``;
2. (:func:`_states`, two loops) the first layer's state gradients before the chunk (``dW0``, ``dS0`` tiles), then
   the second layer's, with the end-of-chunk terms' row sums and pass D's ``da1`` (stashed);
3. (:func:`_pass2`) ``dq``'s query share ``sum_j (beta0 dz0) W0^T + (gamma0 dz0) S0^T`` and ``dCP0 = sum_j dz0
   delta_0^T``;
4. (:func:`_pass3`) ``dD1``'s tile terms ``sum_j dt W1 - (cn1 a1) dW1 - (mn1 a1) dS1``;

:func:`_chunk` runs them and what follows, using what each pass returns at once rather than holding it through
the next pass's loop: ``dq`` and ``da0``'s ``dCP0`` term after pass 2 (the latter kept in ``dk``'s own rows), ``dD1``
after pass 3 and straight into the key-side norm backward, then pass D in two loops (:func:`_pass_d`), the second of
which also forms ``da0``'s end-of-chunk terms ``-sum_j (cn0 delta_0) dW0^T + (mn0 delta_0) dS0^T`` (pass C's in the
one-loop kernel); q, k, ``P_0``, ``C_0`` and the errors are read or formed again where they are needed. Barriers
follow the keeping, pass 1, pass D's first loop and each store of ``dk``'s rows that is read back. The products are
passes C's and D's; ``dD1`` and ``da0`` sum them in another order (float32 rounding apart, the same). What it buys
(compiled offline, Triton 3.6, docs/benchmarks.md "The forward and the backward in passes" and the subsection after
it): at head dim 128 / 64-row chunks the backward with every product on the tensor cores in 32-wide tiles fits an
H100's shared memory (128 KB; the one-loop one needs 256 KB), and with tf32x3 products (the second layer's gradient
tiles formed transposed) the spill instructions a chunk runs (``benchmarks/triton_resources.py``) fall 79%
(head dim 128) and 83% (head dim 64) against the default backwards at 64-row chunks, and 79% on the CUDA cores
(ieee) at head dim 128. Not yet timed on a GPU.

Every loop here is ``tl.range(..., disable_licm=True)``, as in ``triton_phased.py`` (which says why).
"""

from __future__ import annotations

from .triton_blocks import HAS_TRITON


def scratch_width(BN: int, DH: int, DV: int) -> int:
    """Floats per program: ``dz0``, ``delta_0``, ``dt``, ``a1``, ``x1`` (``[BN, DH]`` each), then ``delta_L``, ``dz1``
    (``[BN, DV]``), ``-C_0 P_0``, ``-C_1 dP_1`` (``[BN, BN]``)."""
    return 5 * BN * DH + 2 * BN * DV + 2 * BN * BN


if HAS_TRITON:
    import triton
    import triton.language as tl

    from .triton_blocks import (
        _act,
        _act_bwd,
        _cols,
        _errors,
        _grad2,
        _key_ln_bwd,
        _mm,
        _prod,
        _put,
        _put_coef_grads,
        _put_square,
        _put_t,
        _rows,
        _rows_tn,
        _square,
        _tile,
        _tile_t,
        _zero_coef_grads,
    )

    @triton.jit
    def _keep(sp, dlast, dz1, nCP0, ndP1, BN: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr):
        """Keep the chunk-wide operands the passes read per tile, after the five ``[BN, DH]`` slots."""
        kp = sp + 5 * BN * DH
        _put(kp, 0, 0, DV, dlast, BN, DV)
        _put(kp + BN * DV, 0, 0, DV, dz1, BN, DV)
        _put(kp + 2 * BN * DV, 0, 0, BN, nCP0, BN, BN)
        _put(kp + 2 * BN * DV + BN * BN, 0, 0, BN, ndP1, BN, BN)

    @triton.jit
    def _slot(sp, i: tl.constexpr, j, BN: tl.constexpr, DH: tl.constexpr, TH: tl.constexpr):
        """Tile ``j`` (``[BN, TH]``) of kept slot ``i`` (0 ``dz0``, 1 ``delta_0``, 2 ``dt``, 3 ``a1``, 4 ``x1``)."""
        return _tile(sp + i * BN * DH, 0, j * TH, DH, BN, TH)

    @triton.jit
    def _pass1(kb, sk_t, qb, sq_t, t, mask, sp, pre, stash, W0i, S0i, W1i, S1i, dW0i, dS0i, beta0, gamma0, cn0, mn0,
               beta1, gamma1, dbeta0, dgamma0, dcn0, dmn0, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr,
               DV: tl.constexpr, TH: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr, PRE: tl.constexpr):
        """Pass 1: per tile, the query path's backward through both layers to ``dz0``, the delta chain's ``dt`` and
        pass D's ``dzk0`` (stashed); keeps ``dz0``, ``delta_0``, ``dt``, ``a1``, ``x1``. Returns the row sums
        ``(dbeta0, dgamma0, dcn0, dmn0)`` (added to those given) and ``(dbeta1, dgamma1)``."""
        kp = sp + 5 * BN * DH
        dbeta1 = tl.zeros([BN], dtype=tl.float32)
        dgamma1 = tl.zeros([BN], dtype=tl.float32)
        for j in tl.range(0, DH // TH, disable_licm=True):
            k = _rows(kb, sk_t, t, mask, 0, DK)
            q = _rows(qb, sq_t, t, mask, 0, DK)
            G0j = _tile(W0i, 0, j * TH, DH, DK, TH)
            z0 = _prod(k, G0j, pre, 0, j, PRE, BN, DH, TH, PREC)
            t0 = _prod(_tile(kp, 0, 0, DV, BN, DV), tl.trans(_tile(W1i, j * TH, 0, DV, TH, DV)), pre, 1, j, PRE, BN,
                       DH, TH, PREC)
            d0 = _act_bwd(t0, z0, ACT)
            a1 = _act(z0, ACT)
            _put(sp + BN * DH, 0, j * TH, DH, d0, BN, TH)
            _put(sp + 3 * BN * DH, 0, j * TH, DH, a1, BN, TH)
            tl.debug_barrier()  # the products below read them over the rows, as other threads wrote them
            qG = _prod(q, G0j, pre, 2, j, PRE, BN, DH, TH, PREC)
            qS = _prod(q, _tile(S0i, 0, j * TH, DH, DK, TH), pre, 3, j, PRE, BN, DH, TH, PREC)
            zeta0 = beta0[:, None] * qG + gamma0[:, None] * qS + _cols(
                kp + 2 * BN * DV, BN, sp + BN * DH + j * TH, DH, 1, BN, TH, BN, PREC)  # + (-C_0 P_0) d0
            x1 = _act(zeta0, ACT)
            dz1 = _tile(kp + BN * DV, 0, 0, DV, BN, DV)
            YW1 = _prod(dz1, tl.trans(_tile(W1i, j * TH, 0, DV, TH, DV)), pre, 4, j, PRE, BN, DH, TH, PREC)
            YS1 = _prod(dz1, tl.trans(_tile(S1i, j * TH, 0, DV, TH, DV)), pre, 5, j, PRE, BN, DH, TH, PREC)
            dbeta1 += tl.sum(x1 * YW1, axis=1)
            dgamma1 += tl.sum(x1 * YS1, axis=1)
            dz0 = _act_bwd(beta1[:, None] * YW1 + gamma1[:, None] * YS1 + _cols(
                kp + 2 * BN * DV + BN * BN, BN, sp + 3 * BN * DH + j * TH, DH, 1, BN, TH, BN, PREC), zeta0, ACT)
            _put(sp, 0, j * TH, DH, dz0, BN, TH)
            tl.debug_barrier()
            dbeta0 += tl.sum(dz0 * qG, axis=1)
            dgamma0 += tl.sum(dz0 * qS, axis=1)
            F1 = _prod(k, _tile(dW0i, 0, j * TH, DH, DK, TH), pre, 6, j, PRE, BN, DH, TH, PREC)
            F2 = _prod(k, _tile(dS0i, 0, j * TH, DH, DK, TH), pre, 7, j, PRE, BN, DH, TH, PREC)
            dcn0 -= tl.sum(F1 * d0, axis=1)
            dmn0 -= tl.sum(F2 * d0, axis=1)
            dD0 = _rows_tn(kp + 2 * BN * DV, BN, 0, sp, DH, j * TH, sp, BN, False, BN, TH, BN, PREC) - (
                cn0[:, None] * F1 + mn0[:, None] * F2)  # (-C_0 P_0)^T dz0 - ...
            dt = _act_bwd(dD0, z0, ACT)
            _put(stash, 0, j * TH, DH, dD0 * t0 * _grad2(z0, ACT), BN, TH)  # dzk0, for pass D
            _put(sp + 2 * BN * DH, 0, j * TH, DH, dt, BN, TH)
            _put(sp + 4 * BN * DH, 0, j * TH, DH, x1, BN, TH)
        return dbeta0, dgamma0, dcn0, dmn0, dbeta1, dgamma1

    @triton.jit
    def _states(q0, sq_t, sp, pre, stash, bg0, bg1, nv, W0i, S0i, W1i, S1i, dW0i, dS0i, dW1i, dS1i, dW0o, dS0o, dW1o,
                dS1o, bn0, gn0, hn0, cn1, mn1, bn1, gn1, hn1, dbn0, dgn0, dhn0, BN: tl.constexpr, DK: tl.constexpr,
                DH: tl.constexpr, DV: tl.constexpr, TH: tl.constexpr, PREC: tl.constexpr, PRE: tl.constexpr):
        """Pass 2: per tile, the state gradients before the chunk (``dW``, ``dS`` of both layers), the end-of-chunk
        terms' row sums and ``da1`` (stashed for pass D). Returns ``(dbn0, dgn0, dhn0, dcn1, dmn1, dbn1, dgn1,
        dhn1)``, layer 0's added to those given."""
        kp = sp + 5 * BN * DH
        _, _, dcn1, dmn1, dbn1, dgn1, dhn1 = _zero_coef_grads(BN)
        for j in tl.range(0, DH // TH, disable_licm=True):
            dWp0 = _tile(dW0i, 0, j * TH, DH, DK, TH)
            dSp0 = _tile(dS0i, 0, j * TH, DH, DK, TH)
            G0j = _tile(W0i, 0, j * TH, DH, DK, TH)
            S0j = _tile(S0i, 0, j * TH, DH, DK, TH)
            dbn0 += tl.sum(tl.sum(dWp0 * G0j, axis=1), axis=0)
            dgn0 += tl.sum(tl.sum(dWp0 * S0j, axis=1), axis=0)
            dhn0 += tl.sum(tl.sum(dSp0 * S0j, axis=1), axis=0)
            # q^T diag(beta0) dz0 and q^T diag(gamma0) dz0 over the rows 16 at a time (see _rows_tn)
            _put(dW0o, 0, j * TH, DH, _rows_tn(q0, sq_t, 0, sp, DH, j * TH, bg0, nv, True, DK, TH, BN, PREC)
                 + bn0 * dWp0, DK, TH)
            _put(dS0o, 0, j * TH, DH, _rows_tn(q0, sq_t, 0, sp, DH, j * TH, bg0 + BN, nv, True, DK, TH, BN, PREC)
                 + gn0 * dWp0 + hn0 * dSp0, DK, TH)
        # the second layer's, in a loop of its own: one loop for both spilled more
        for j in tl.range(0, DH // TH, disable_licm=True):
            # With tf32x3 products the [TH, DV] tiles are formed transposed ([DV, TH]: the products' rows the head dim,
            # not the tile's few; the warp-group products take 64 rows at least), as the forward's at head dim 128
            # (triton_phased._second_state): compiled offline, fewer spills at both head dims (docs/benchmarks.md).
            if PREC == 1:
                dWp1 = _tile_t(dW1i, j * TH, 0, DV, TH, DV)
                dSp1 = _tile_t(dS1i, j * TH, 0, DV, TH, DV)
                W1j = _tile_t(W1i, j * TH, 0, DV, TH, DV)
                S1j = _tile_t(S1i, j * TH, 0, DV, TH, DV)
                dWt = dWp1
                dSt = dSp1
            else:
                dWp1 = _tile(dW1i, j * TH, 0, DV, TH, DV)
                dSp1 = _tile(dS1i, j * TH, 0, DV, TH, DV)
                W1j = _tile(W1i, j * TH, 0, DV, TH, DV)
                S1j = _tile(S1i, j * TH, 0, DV, TH, DV)
                dWt = tl.trans(dWp1)
                dSt = tl.trans(dSp1)
            dlast = _tile(kp, 0, 0, DV, BN, DV)
            dlW1 = _prod(dlast, dWt, pre, 8, j, PRE, BN, DH, TH, PREC)
            dlS1 = _prod(dlast, dSt, pre, 9, j, PRE, BN, DH, TH, PREC)
            a1 = _slot(sp, 3, j, BN, DH, TH)
            # ndP1^T x1 over the rows 16 at a time, from the scratch
            dP1x1 = _rows_tn(kp + 2 * BN * DV + BN * BN, BN, 0, sp + 4 * BN * DH, DH, j * TH, bg1, BN, False, BN,
                             TH, BN, PREC)
            _put(stash + BN * DH, 0, j * TH, DH, dP1x1 - cn1[:, None] * dlW1 - mn1[:, None] * dlS1, BN, TH)  # da1
            dcn1 -= tl.sum(a1 * dlW1, axis=1)
            dmn1 -= tl.sum(a1 * dlS1, axis=1)
            dbn1 += tl.sum(tl.sum(dWp1 * W1j, axis=1), axis=0)
            dgn1 += tl.sum(tl.sum(dWp1 * S1j, axis=1), axis=0)
            dhn1 += tl.sum(tl.sum(dSp1 * S1j, axis=1), axis=0)
            if PREC == 1:
                xs = sp + 4 * BN * DH
                dz1s = kp + BN * DV
                dW1 = _rows_tn(dz1s, DV, 0, xs, DH, j * TH, bg1, BN, True, DV, TH, BN, PREC)
                dW1 += _rows_tn(kp, DV, 0, sp + 2 * BN * DH, DH, j * TH, bg1, BN, False, DV, TH, BN, PREC)
                _put_t(dW1o, j * TH, 0, DV, dW1 + bn1 * dWp1, TH, DV)
                dS1 = _rows_tn(dz1s, DV, 0, xs, DH, j * TH, bg1 + BN, BN, True, DV, TH, BN, PREC)
                _put_t(dS1o, j * TH, 0, DV, dS1 + gn1 * dWp1 + hn1 * dSp1, TH, DV)
            else:  # x1^T (beta1 dz1) + dt^T dlast and x1^T (gamma1 dz1) over the rows 16 at a time, from the scratch
                xs = sp + 4 * BN * DH
                dz1s = kp + BN * DV
                dW1 = _rows_tn(xs, DH, j * TH, dz1s, DV, 0, bg1, BN, True, TH, DV, BN)
                dW1 += _rows_tn(sp + 2 * BN * DH, DH, j * TH, kp, DV, 0, bg1, BN, False, TH, DV, BN)
                _put(dW1o, j * TH, 0, DV, dW1 + bn1 * dWp1, TH, DV)
                dS1 = _rows_tn(xs, DH, j * TH, dz1s, DV, 0, bg1 + BN, BN, True, TH, DV, BN)
                _put(dS1o, j * TH, 0, DV, dS1 + gn1 * dWp1 + hn1 * dSp1, TH, DV)
        return dbn0, dgn0, dhn0, dcn1, dmn1, dbn1, dgn1, dhn1

    @triton.jit
    def _pass2(sp, W0i, S0i, beta0, gamma0, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr, TH: tl.constexpr,
               PREC: tl.constexpr):
        """Pass 2: ``(dqa, dCP0)``. With tf32x3 products at head dim 128 and more, ``dqa`` in two loops of half its
        columns each (as pass 3's ``dD1``), ``dCP0`` in the second."""
        if PREC == 1 and DK >= 128:
            dqa, _ = _pass2_cols(sp, W0i, S0i, beta0, gamma0, 0, BN, DH, DK // 2, TH, PREC, False)
            dqb, dCP0 = _pass2_cols(sp, W0i, S0i, beta0, gamma0, DK // 2, BN, DH, DK // 2, TH, PREC, True)
            return tl.join(dqa, dqb).permute(0, 2, 1).reshape(BN, DK), dCP0
        else:
            return _pass2_cols(sp, W0i, S0i, beta0, gamma0, 0, BN, DH, DK, TH, PREC, True)

    @triton.jit
    def _pass2_cols(sp, W0i, S0i, beta0, gamma0, c0, BN: tl.constexpr, DH: tl.constexpr, NC: tl.constexpr,
                    TH: tl.constexpr, PREC: tl.constexpr, CP: tl.constexpr):
        """Columns ``c0 .. c0 + NC`` of ``dqa``, and (where ``CP``) ``dCP0``."""
        dqa = tl.zeros([BN, NC], dtype=tl.float32)
        dCP0 = tl.zeros([BN, BN], dtype=tl.float32)
        for j in tl.range(0, DH // TH, disable_licm=True):
            dz0 = _slot(sp, 0, j, BN, DH, TH)
            dqa += _mm(beta0[:, None] * dz0, tl.trans(_tile(W0i, c0, j * TH, DH, NC, TH)), PREC)
            dqa += _mm(gamma0[:, None] * dz0, tl.trans(_tile(S0i, c0, j * TH, DH, NC, TH)), PREC)
            if CP:
                dCP0 += _mm(dz0, tl.trans(_slot(sp, 1, j, BN, DH, TH)), PREC)
        return dqa, dCP0

    @triton.jit
    def _pass3(sp, W1i, dW1i, dS1i, cn1, mn1, BN: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr,
               TH: tl.constexpr, PREC: tl.constexpr):
        """Pass 3: ``dD1``'s tile terms (``da0``'s end-of-chunk terms wait for pass D's second loop). With tf32x3
        products at head dim 128 and more, in two loops, each forming half of ``dD1``'s columns (a sum half as wide
        held through each; compiled offline, fewer spills there, more at head dim 64 and on the CUDA cores)."""
        if PREC == 1 and DV >= 128:
            return tl.join(_dD1_cols(sp, W1i, dW1i, dS1i, cn1, mn1, 0, BN, DH, DV, DV // 2, TH, PREC),
                           _dD1_cols(sp, W1i, dW1i, dS1i, cn1, mn1, DV // 2, BN, DH, DV, DV // 2, TH, PREC)
                           ).permute(0, 2, 1).reshape(BN, DV)
        else:
            return _dD1_cols(sp, W1i, dW1i, dS1i, cn1, mn1, 0, BN, DH, DV, DV, TH, PREC)

    @triton.jit
    def _dD1_cols(sp, W1i, dW1i, dS1i, cn1, mn1, c0, BN: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr,
                  NC: tl.constexpr, TH: tl.constexpr, PREC: tl.constexpr):
        """Columns ``c0 .. c0 + NC`` of pass 3's sum."""
        dD1 = tl.zeros([BN, NC], dtype=tl.float32)
        for j in tl.range(0, DH // TH, disable_licm=True):
            a1 = _slot(sp, 3, j, BN, DH, TH)
            dD1 += _mm(_slot(sp, 2, j, BN, DH, TH), _tile(W1i, j * TH, c0, DV, TH, NC), PREC)
            dD1 += _mm(-cn1[:, None] * a1, _tile(dW1i, j * TH, c0, DV, TH, NC), PREC)
            dD1 += _mm(-mn1[:, None] * a1, _tile(dS1i, j * TH, c0, DV, TH, NC), PREC)
        return dD1

    @triton.jit
    def _chunk(kb, sk_t, qb, sq_t, vb, sv_t, dob, sdo_t, dqb, dkb, dvb, sg_t, t, t0, nv, mask, sp, pre, stash, bg0,
               bg1, C_ptr, dC_ptr, i0, i1, zk_ptr, P1_ptr, W0i, S0i, W1i, S1i, dW0i, dS0i, dW1i, dS1i, dW0o, dS0o,
               dW1o, dS1o, dbg_ptr, dcn_ptr, dmn_ptr, dscal_ptr, beta0, gamma0, cn0, mn0, bn0, gn0, hn0, beta1, gamma1,
               cn1, mn1, bn1, gn1, hn1, dlast, dz1, nCP0, ndP1, lw, lb, BN: tl.constexpr, DK: tl.constexpr,
               DH: tl.constexpr, DV: tl.constexpr, TH: tl.constexpr, ACT: tl.constexpr, NORM: tl.constexpr,
               RES: tl.constexpr, PREC: tl.constexpr, PRE: tl.constexpr):
        """One chunk's passes C and D in loops, from what the kernel formed before them (``dlast``, ``dz1``,
        ``nCP0``, ``ndP1``, kept here for the passes) to ``dq``, ``dk``, ``dv`` and the coefficients' gradients,
        stored.
        Returns this chunk's LayerNorm parameter gradients from the key side ``(dlnw, dlnb)``.

        What a pass returns is used at once rather than held through the next pass's loop (a ``[BN, DK]`` sum held
        through a loop is spilled there): ``dq`` and the part of ``dk`` that needs ``dCP0`` right after pass 2 (that
        part of ``dk`` kept in ``dk``'s own rows until pass D has the rest), ``dD1`` after pass 3 and straight into
        the key-side norm backward, whose output goes to ``dk``'s rows too; q, k, ``P_0``, ``C_0`` and the errors are
        read or formed again where they are needed."""
        _keep(sp, dlast, dz1, nCP0, ndP1, BN, DH, DV)
        tl.debug_barrier()  # pass 1 reads them as other threads of this program wrote them
        z, _, _, _, s, _, _ = _zero_coef_grads(BN)  # (a scalar returned by a function: a tensor, not a constexpr)
        dbeta0, dgamma0, dcn0, dmn0, dbeta1, dgamma1 = _pass1(
            kb, sk_t, qb, sq_t, t, mask, sp, pre, stash, W0i, S0i, W1i, S1i, dW0i, dS0i, beta0, gamma0, cn0, mn0,
            beta1, gamma1, z, z, z, z, BN, DK, DH, DV, TH, ACT, PREC, PRE)
        tl.debug_barrier()  # the passes below read what pass 1 kept
        dbn0, dgn0, dhn0, dcn1, dmn1, dbn1, dgn1, dhn1 = _states(
            qb + t0 * sq_t, sq_t, sp, pre, stash, bg0, bg1, nv, W0i, S0i, W1i, S1i, dW0i, dS0i, dW1i, dS1i, dW0o, dS0o,
            dW1o, dS1o, bn0, gn0, hn0, cn1, mn1, bn1, gn1, hn1, s, s, s, BN, DK, DH, DV, TH, PREC, PRE)
        _put_coef_grads(dbg_ptr, dcn_ptr, dmn_ptr, dscal_ptr, i1, dbeta1, dgamma1, dcn1, dmn1, dbn1, dgn1, dhn1, BN)
        dqa, dCP0 = _pass2(sp, W0i, S0i, beta0, gamma0, BN, DK, DH, TH, PREC)
        rn = tl.arange(0, BN)
        rk = tl.arange(0, DK)
        k = _rows(kb, sk_t, t, mask, 0, DK)
        q = _rows(qb, sq_t, t, mask, 0, DK)
        P0 = _mm(q, tl.trans(k), PREC)
        _put_square(dC_ptr, i0, tl.where(rn[:, None] >= rn[None, :], -dCP0 * P0, 0.0), BN)
        ndP0 = -(dCP0 * _square(C_ptr, i0, BN))
        dq = dqa + _mm(ndP0, k, PREC)
        if RES:
            dq += _rows(dob, sdo_t, t, mask, 0, DK)
        tl.store(dqb + t[:, None] * sg_t + rk[None, :], dq, mask=mask[:, None])
        dk_rows = dkb + t[:, None] * sg_t + rk[None, :]
        tl.store(dk_rows, _mm(tl.trans(ndP0), q, PREC), mask=mask[:, None])  # da0's first term
        # Pass 3, then the key-side norm backward (step 4) on dD1 = its sum + nCP1^T dz1.
        nCP1 = -(_square(C_ptr, i1, BN) * _square(P1_ptr, 0, BN))
        dD1 = _pass3(sp, W1i, dW1i, dS1i, cn1, mn1, BN, DH, DV, TH, PREC) + _mm(
            tl.trans(nCP1), _tile(sp + 5 * BN * DH + BN * DV, 0, 0, DV, BN, DV), PREC)
        dlast, e, xk, rk_ = _errors(_tile(zk_ptr, 0, 0, DV, BN, DV), _rows(kb, sk_t, t, mask, 0, DK),
                                    _rows(vb, sv_t, t, mask, 0, DV), lw, lb, mask, DV, NORM, RES)
        dout, df, dlnw, dlnb = _key_ln_bwd(dD1, dlast, e, xk, rk_, lw, mask, DV, NORM)
        rv = tl.arange(0, DV)
        tl.store(dvb + t[:, None] * sg_t + rv[None, :], -dout, mask=mask[:, None])
        if RES:  # the residual's share of dk
            tl.debug_barrier()  # read as other threads stored it
            tl.store(dk_rows, tl.load(dk_rows, mask=mask[:, None], other=0.0) + dout, mask=mask[:, None])
        tl.debug_barrier()  # every thread done with dlast's slot (_states read it) before df overwrites it
        _put(sp + 5 * BN * DH, 0, 0, DV, df, BN, DV)  # pass D reads df from the scratch (dlast's slot; _rows_tn)
        tl.debug_barrier()
        da0 = _pass_d(kb, kb + t0 * sk_t, sk_t, t, nv, mask, pre, stash, sp, W0i, W1i, dW0i, dS0i, dW0o, dW1o,
                      tl.zeros([BN, DK], dtype=tl.float32), cn0, mn0, BN, DK, DH, DV, TH, ACT, PREC, PRE)
        _put_coef_grads(dbg_ptr, dcn_ptr, dmn_ptr, dscal_ptr, i0, dbeta0, dgamma0, dcn0, dmn0, dbn0, dgn0, dhn0, BN)
        tl.debug_barrier()
        tl.store(dk_rows, tl.load(dk_rows, mask=mask[:, None], other=0.0) + da0, mask=mask[:, None])
        return dlnw, dlnb

    @triton.jit
    def _pass_d(kb, k0, sk_t, t, nv, mask, pre, stash, sp, W0i, W1i, dW0i, dS0i, dW0o, dW1o, da0, cn0, mn0,
                BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr, TH: tl.constexpr,
                ACT: tl.constexpr, PREC: tl.constexpr, PRE: tl.constexpr):
        """Pass D (the key path) in two loops: per tile the second layer's ``dW += a1^T df`` and ``dzk0`` (kept in
        the stash), then the first layer's ``dW += k^T dzk0`` and ``da0 += dzk0 W0^T`` with ``da0``'s end-of-chunk
        terms (held through one loop rather than three). Returns ``da0``. With tf32x3 products ``a1^T df`` is formed
        transposed (as in :func:`_states`)."""
        for j in tl.range(0, DH // TH, disable_licm=True):
            z0 = _prod(_rows(kb, sk_t, t, mask, 0, DK), _tile(W0i, 0, j * TH, DH, DK, TH), pre, 0, j, PRE, BN, DH,
                       TH, PREC)
            # a1^T df over the rows 16 at a time (transposed, df^T a1, with tf32x3 products): a1 as pass 1 kept
            # it, df as _chunk put it
            dfs = sp + 5 * BN * DH
            if PREC == 1:
                _put_t(dW1o, j * TH, 0, DV, _tile_t(dW1o, j * TH, 0, DV, TH, DV) + _rows_tn(
                    dfs, DV, 0, sp + 3 * BN * DH, DH, j * TH, k0, BN, False, DV, TH, BN, PREC), TH, DV)
            else:
                _put(dW1o, j * TH, 0, DV, _tile(dW1o, j * TH, 0, DV, TH, DV) + _rows_tn(
                    sp + 3 * BN * DH, DH, j * TH, dfs, DV, 0, k0, BN, False, TH, DV, BN), TH, DV)
            da1 = _tile(stash + BN * DH, 0, j * TH, DH, BN, TH)
            dfW = _cols(dfs, DV, W1i + j * TH * DV, 1, DV, BN, TH, DV, PREC)  # df W1^T over DV 16 at a time
            dzk0 = _tile(stash, 0, j * TH, DH, BN, TH) + _act_bwd(da1 + dfW, z0, ACT)
            _put(stash, 0, j * TH, DH, dzk0, BN, TH)
        tl.debug_barrier()  # the second loop reads dzk0 as other threads wrote it
        if PREC == 1 and DK >= 128:  # the state gradient, then da0 in two halves of its columns (as pass 3's dD1)
            for j in tl.range(0, DH // TH, disable_licm=True):
                kdz = _rows_tn(k0, sk_t, 0, stash, DH, j * TH, k0, nv, False, DK, TH, BN, PREC)  # k^T dzk0
                _put(dW0o, 0, j * TH, DH, _tile(dW0o, 0, j * TH, DH, DK, TH) + kdz, DK, TH)
            da0 += tl.join(_da0_cols(stash, sp, W0i, dW0i, dS0i, cn0, mn0, 0, BN, DH, DK // 2, TH, PREC),
                           _da0_cols(stash, sp, W0i, dW0i, dS0i, cn0, mn0, DK // 2, BN, DH, DK // 2, TH, PREC)
                           ).permute(0, 2, 1).reshape(BN, DK)
        else:
            for j in tl.range(0, DH // TH, disable_licm=True):
                dzk0 = _tile(stash, 0, j * TH, DH, BN, TH)
                kdz = _rows_tn(k0, sk_t, 0, stash, DH, j * TH, k0, nv, False, DK, TH, BN, PREC)  # k^T dzk0
                _put(dW0o, 0, j * TH, DH, _tile(dW0o, 0, j * TH, DH, DK, TH) + kdz, DK, TH)
                da0 += _mm(dzk0, tl.trans(_tile(W0i, 0, j * TH, DH, DK, TH)), PREC)
                d0 = _slot(sp, 1, j, BN, DH, TH)  # and pass C's end-of-chunk terms of da0
                da0 += _mm(-cn0[:, None] * d0, tl.trans(_tile(dW0i, 0, j * TH, DH, DK, TH)), PREC)
                da0 += _mm(-mn0[:, None] * d0, tl.trans(_tile(dS0i, 0, j * TH, DH, DK, TH)), PREC)
        return da0

    @triton.jit
    def _da0_cols(stash, sp, W0i, dW0i, dS0i, cn0, mn0, c0, BN: tl.constexpr, DH: tl.constexpr,
                  NC: tl.constexpr, TH: tl.constexpr, PREC: tl.constexpr):
        """Columns ``c0 .. c0 + NC`` of pass D's ``da0`` terms: ``dzk0 W0^T`` and pass C's end-of-chunk ones."""
        da0 = tl.zeros([BN, NC], dtype=tl.float32)
        for j in tl.range(0, DH // TH, disable_licm=True):
            d0 = _slot(sp, 1, j, BN, DH, TH)
            da0 += _mm(_tile(stash, 0, j * TH, DH, BN, TH), tl.trans(_tile(W0i, c0, j * TH, DH, NC, TH)), PREC)
            da0 += _mm(-cn0[:, None] * d0, tl.trans(_tile(dW0i, c0, j * TH, DH, NC, TH)), PREC)
            da0 += _mm(-mn0[:, None] * d0, tl.trans(_tile(dS0i, c0, j * TH, DH, NC, TH)), PREC)
        return da0
