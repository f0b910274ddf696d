"""The Triton building blocks of ``triton_seq.py`` (forward) and ``triton_seq_bwd.py`` (backward): activations and
their derivatives, float32 products, token rows and weight tiles, a chunk's coefficients, LayerNorm and its
backward, the keys' path through the memory and the errors ``delta_L``. Shapes in the docstrings are per program
(one batch row and head): ``[BN, D]`` rows of a chunk, ``[R, C]`` tiles of a weight matrix."""

from __future__ import annotations

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # the optional extra is not installed
    HAS_TRITON = False

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
    def _mm(a, b, PREC: tl.constexpr):
        """``a @ b`` in float32: ``ieee`` (CUDA cores) or ``tf32x3`` (tensor cores, three TF32 products that keep
        about float32's accuracy; see :data:`PRECISIONS`)."""
        if PREC == 1:
            return tl.dot(a, b, input_precision="tf32x3")
        else:
            return tl.dot(a, b, input_precision="ieee")

    @triton.jit
    def _prod(a, b, pre, slot: tl.constexpr, j, PRE: tl.constexpr, BN: tl.constexpr, DH: tl.constexpr,
              TH: tl.constexpr, PREC: tl.constexpr):
        """Tile ``j`` (``[BN, TH]``) of a product ``[BN, DH]``: ``a @ b`` (``a``'s rows times this tile of the
        weights), or where the backward's pre-pass formed the whole product in wide tiles (``PRE``) its tile read
        from that pass's scratch ``pre`` (``[slots, BN, DH]``, slot ``slot``)."""
        if PRE:
            return _tile(pre + slot * BN * DH, 0, j * TH, DH, BN, TH)
        else:
            return _mm(a, b, PREC)

    @triton.jit
    def _wide(a_rows, a_ks, amask, b_ptr, b_rs, b_cs, K: tl.constexpr, BN: tl.constexpr, TP: tl.constexpr,
              PREC: tl.constexpr):
        """``A @ B`` ``[BN, TP]`` with both operands read from memory in slices along ``K``: ``A[i, k]`` at
        ``a_rows[i] + k a_ks`` (zero where ``~amask``), ``B[k, c]`` at ``b_ptr + k b_rs + c b_cs``. A product formed
        this way holds only its ``[BN, TP]`` sum (4 x 4 outputs per thread at 8 warps where ``BN TP = 4096``, two
        multiply-adds per shared-memory load) and slices of its operands: 16 wide, or with ``tf32x3`` (tensor cores)
        32 wide, and ``ieee`` where ``K`` or ``TP`` is under 32 (tf32x3 products 16 wide ended in illegal memory
        accesses on the H100: ``triton_config.TF32X3_MIN_TILE``)."""
        if PREC == 1 and K >= 32 and TP >= 32:
            return _wide_slices(a_rows, a_ks, amask, b_ptr, b_rs, b_cs, K, BN, TP, 32, 1)
        else:
            return _wide_slices(a_rows, a_ks, amask, b_ptr, b_rs, b_cs, K, BN, TP, 16, 0)

    @triton.jit
    def _wide_slices(a_rows, a_ks, amask, b_ptr, b_rs, b_cs, K: tl.constexpr, BN: tl.constexpr, TP: tl.constexpr,
                     KS: tl.constexpr, PREC: tl.constexpr):
        """:func:`_wide` in slices of ``KS`` along ``K`` with products of precision ``PREC``."""
        ks = tl.arange(0, KS)
        c = tl.arange(0, TP)
        acc = tl.zeros([BN, TP], dtype=tl.float32)
        for s in range(K // KS):
            a = tl.load(a_rows[:, None] + (s * KS + ks)[None, :] * a_ks, mask=amask[:, None],
                        other=0.0).to(tl.float32)
            acc += _mm(a, tl.load(b_ptr + (s * KS + ks)[:, None] * b_rs + c[None, :] * b_cs), PREC)
        return acc

    @triton.jit
    def _head_rows(pid, H, q_ptr, sq_b, sq_h, k_ptr, sk_b, sk_h, v_ptr, sv_b, sv_h):
        """``(b, h, qb, kb, vb)``: program ``pid``'s batch row and head and the bases of its q, k, v rows."""
        b = pid // H
        h = pid % H
        return b, h, q_ptr + b * sq_b + h * sq_h, k_ptr + b * sk_b + h * sk_h, v_ptr + b * sv_b + h * sv_h

    @triton.jit
    def _rows(ptr, s_t, t, mask, c0, C: tl.constexpr):
        """Rows ``t`` (tokens), columns ``c0 .. c0 + C`` of a token tensor, float32, zero where ``~mask``."""
        rc = c0 + tl.arange(0, C)
        return tl.load(ptr + t[:, None] * s_t + rc[None, :], mask=mask[:, None], other=0.0).to(tl.float32)

    @triton.jit
    def _tile(ptr, r0, c0, ld, R: tl.constexpr, C: tl.constexpr):
        """The ``[R, C]`` tile at ``(r0, c0)`` of a row-major matrix with leading dimension ``ld``."""
        r = r0 + tl.arange(0, R)
        c = c0 + tl.arange(0, C)
        return tl.load(ptr + r[:, None] * ld + c[None, :])

    @triton.jit
    def _put(ptr, r0, c0, ld, x, R: tl.constexpr, C: tl.constexpr):
        r = r0 + tl.arange(0, R)
        c = c0 + tl.arange(0, C)
        tl.store(ptr + r[:, None] * ld + c[None, :], x)

    @triton.jit
    def _tile_t(ptr, r0, c0, ld, R: tl.constexpr, C: tl.constexpr):
        """The ``[R, C]`` tile at ``(r0, c0)``, read transposed: ``[C, R]``."""
        r = r0 + tl.arange(0, R)
        c = c0 + tl.arange(0, C)
        return tl.load(ptr + r[None, :] * ld + c[:, None])

    @triton.jit
    def _put_t(ptr, r0, c0, ld, xt, R: tl.constexpr, C: tl.constexpr):
        """Store ``xt`` (``[C, R]``) transposed as the ``[R, C]`` tile at ``(r0, c0)``."""
        r = r0 + tl.arange(0, R)
        c = c0 + tl.arange(0, C)
        tl.store(ptr + r[None, :] * ld + c[:, None], xt)

    @triton.jit
    def _square(ptr, idx, BN: tl.constexpr):
        """Chunk ``idx``'s ``[BN, BN]`` matrix of a stack of them (the decay coefficients ``C`` or their gradient)."""
        rn = tl.arange(0, BN)
        return tl.load(ptr + idx * BN * BN + rn[:, None] * BN + rn[None, :])

    @triton.jit
    def _put_square(ptr, idx, x, BN: tl.constexpr):
        rn = tl.arange(0, BN)
        tl.store(ptr + idx * BN * BN + rn[:, None] * BN + rn[None, :], x)

    @triton.jit
    def _saved(ptr, idx, part: tl.constexpr, L: tl.constexpr, NORM: tl.constexpr, BN: tl.constexpr,
               DV: tl.constexpr):
        """Where chunk ``idx``'s saved activations (the forward's, for the backward) keep ``part``: 0 the keys
        through the memory ``zk`` ``[BN, DV]``, 1 (with the norm) the output before it ``zq`` ``[BN, DV]``, 2 (depth
        2) the second layer's ``P_1 = x_1 a_1^T`` ``[BN, BN]``; a chunk's are contiguous (``saved_width``)."""
        at = 0 if part == 0 else BN * DV if part == 1 else (1 + NORM) * BN * DV
        return ptr + idx * ((1 + NORM) * BN * DV + (L - 1) * BN * BN) + at

    @triton.jit
    def _coefs(bg_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr, idx, BN: tl.constexpr):
        """One layer's coefficients for one chunk (zero-padded to BN rows)."""
        rn = tl.arange(0, BN)
        beta = tl.load(bg_ptr + idx * 2 * BN + rn)
        gamma = tl.load(bg_ptr + idx * 2 * BN + BN + rn)
        C = _square(C_ptr, idx, BN)
        cn = tl.load(cn_ptr + idx * BN + rn)
        mn = tl.load(mn_ptr + idx * BN + rn)
        bn = tl.load(scal_ptr + idx * 3)
        gn = tl.load(scal_ptr + idx * 3 + 1)
        hn = tl.load(scal_ptr + idx * 3 + 2)
        return beta, gamma, C, cn, mn, bn, gn, hn

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
    def _norm_params(lnw_ptr, lnb_ptr, h, DV: tl.constexpr, NORM: tl.constexpr):
        """Head ``h``'s LayerNorm weight and bias ``[DV]`` (zeros, unused, without the norm)."""
        rv = tl.arange(0, DV)
        if NORM:
            lw = tl.load(lnw_ptr + h * DV + rv).to(tl.float32)
            lb = tl.load(lnb_ptr + h * DV + rv).to(tl.float32)
        else:
            lw = tl.zeros([DV], dtype=tl.float32)
            lb = lw
        return lw, lb

    @triton.jit
    def _keys(k, kb, s_t, t, mask, W0i, W1i, L: tl.constexpr, BN: tl.constexpr, DK: tl.constexpr,
              DH: tl.constexpr, DV: tl.constexpr, TH: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr):
        """The keys through the memory at the chunk's starting weights: ``zk [BN, DV]`` (before norm/residual)."""
        zk = tl.zeros([BN, DV], dtype=tl.float32)
        if L == 2:
            for j in range(DH // TH):
                z0 = _mm(k, _tile(W0i, 0, j * TH, DH, DK, TH), PREC)
                zk += _mm(_act(z0, ACT), _tile(W1i, j * TH, 0, DV, TH, DV), PREC)
        else:
            for j in range(DK // TH):
                zk += _mm(_rows(kb, s_t, t, mask, j * TH, TH), _tile(W0i, j * TH, 0, DV, TH, DV), PREC)
        return zk

    @triton.jit
    def _errors(zk, k, v, lw, lb, mask, DV: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr):
        """``(dlast, e, xk, rk)``: the error at the memory's output (``e = 2 (M(k) - v)``) and its gradient at the
        last pre-norm activation (``delta_L``); zero on padded rows."""
        if NORM:
            xk, rk = _ln(zk, DV)
            y = xk * lw[None, :] + lb[None, :]
        else:
            xk, rk = zk, tl.zeros([zk.shape[0]], dtype=tl.float32)  # unused without the norm
            y = zk
        if RES:
            y = y + k
        e = tl.where(mask[:, None], 2.0 * (y - v), 0.0)
        if NORM:  # noqa: SIM108 (a static if on a constexpr: Triton compiles one branch)
            dlast = _ln_bwd(e, xk, rk, lw, DV)
        else:
            dlast = e
        return dlast, e, xk, rk

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
    def _zero_coef_grads(BN: tl.constexpr):
        """Zeros for one layer's coefficient-gradient accumulators, :func:`_put_coef_grads`' ``dbeta, dgamma, dcn,
        dmn`` (``[BN]``) and ``dbn, dgn, dhn`` (scalars)."""
        z = tl.zeros([BN], dtype=tl.float32)
        return z, z, z, z, 0.0, 0.0, 0.0

    @triton.jit
    def _put_coef_grads(dbg_ptr, dcn_ptr, dmn_ptr, dscal_ptr, idx, dbeta, dgamma, dcn, dmn, dbn, dgn, dhn,
                        BN: tl.constexpr):
        """One layer's coefficient gradients for one chunk, but the ``[BN, BN]`` one (:func:`_put_square`)."""
        rn = tl.arange(0, BN)
        tl.store(dbg_ptr + idx * 2 * BN + rn, dbeta)
        tl.store(dbg_ptr + idx * 2 * BN + BN + rn, dgamma)
        tl.store(dcn_ptr + idx * BN + rn, dcn)
        tl.store(dmn_ptr + idx * BN + rn, dmn)
        tl.store(dscal_ptr + idx * 3, dbn)
        tl.store(dscal_ptr + idx * 3 + 1, dgn)
        tl.store(dscal_ptr + idx * 3 + 2, dhn)

    @triton.jit
    def _out_ln_bwd(zq, do, lw, DV: tl.constexpr, NORM: tl.constexpr):
        """The output's LayerNorm backward: ``(dz, dlnw, dlnb)`` from the gradient ``do`` at the memory's output."""
        if NORM:
            xq, rq = _ln(zq, DV)
            return _ln_bwd(do, xq, rq, lw, DV), tl.sum(do * xq, axis=0), tl.sum(do, axis=0)
        else:
            return do, tl.zeros([DV], dtype=tl.float32), tl.zeros([DV], dtype=tl.float32)

    @triton.jit
    def _key_ln_bwd(dD, dlast, e, xk, rk, lw, mask, DV: tl.constexpr, NORM: tl.constexpr):
        """Step 4 (README §6): through the LayerNorm backward that produced ``delta_L`` (second order) and
        ``e = 2 (out - v)``. Returns ``(dout, df, dlnw, dlnb)``: the gradient at the memory's output for the keys,
        at its pre-norm activation, and this chunk's LayerNorm parameter gradients from the key side."""
        if NORM:
            ghat = e * lw[None, :]
            rho = rk[:, None] * dD
            m_rx = tl.sum(rho * xk, axis=1) / DV
            dghat = rho - (tl.sum(rho, axis=1) / DV)[:, None] - xk * m_rx[:, None]
            dxhat = -rho * (tl.sum(ghat * xk, axis=1) / DV)[:, None] - ghat * m_rx[:, None]
            dr = tl.sum(dD * dlast, axis=1) / rk
            de = dghat * lw[None, :]
        else:
            de = dD
        dout = tl.where(mask[:, None], 2.0 * de, 0.0)
        if NORM:
            dlnw = tl.sum(dghat * e, axis=0) + tl.sum(dout * xk, axis=0)
            dlnb = tl.sum(dout, axis=0)
            dxhat = dxhat + dout * lw[None, :]
            df = rk[:, None] * (dxhat - (tl.sum(dxhat, axis=1) / DV)[:, None]
                                - xk * (tl.sum(dxhat * xk, axis=1) / DV)[:, None])
            df = df - (dr * rk * rk)[:, None] * xk / DV
        else:
            dlnw = tl.sum(dout, axis=0) * 0.0
            dlnb = dlnw
            df = dout
        return dout, df, dlnw, dlnb

    @triton.jit
    def _rows_tn(a_ptr, lda, a0, b_ptr, ldb, b0, s_ptr, nv, SCALE: tl.constexpr, M: tl.constexpr, N: tl.constexpr,
                 BN: tl.constexpr, PREC: tl.constexpr = 0):
        """``A^T diag(s) B`` (``[M, N]``) of two ``[BN, .]`` row-major matrices in memory (A's columns ``a0 ..
        a0 + M``, B's ``b0 .. b0 + N``; ``s`` at ``s_ptr`` where ``SCALE``; rows from ``nv`` on read as zeros),
        summed over the rows 16 at a time. For the CUDA cores' products (ieee): each thread holds its operands'
        values along the summed dimension, so 16 rows at a time rather than the chunk's ``BN`` keeps them in
        registers."""
        acc = tl.zeros([M, N], dtype=tl.float32)
        for r in tl.static_range(BN // 16):
            rows = r * 16 + tl.arange(0, 16)
            ok = (rows < nv)[:, None]
            a = tl.load(a_ptr + rows[:, None] * lda + a0 + tl.arange(0, M)[None, :], mask=ok, other=0.0)
            a = a.to(tl.float32)  # (q or k in half precision)
            if SCALE:
                a = a * tl.load(s_ptr + rows)[:, None]
            b = tl.load(b_ptr + rows[:, None] * ldb + b0 + tl.arange(0, N)[None, :], mask=ok, other=0.0)
            acc += _mm(tl.trans(a), b, PREC)
        return acc

    @triton.jit
    def _cols(a_ptr, lda, b_ptr, b_rs, b_cs, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr,
              PREC: tl.constexpr = 0):
        """``A B`` (``[M, N]``) of row-major ``A [M, K]`` and ``B [K, N]`` (``B[k, n]`` at ``b_ptr + k b_rs + n
        b_cs``) in memory, summed over ``K`` 16 at a time: as :func:`_rows_tn`. (``_wide_slices`` forms the same in a
        loop; unrolled here, inside the tile loops, the spills of a chunk are counted per tile.)"""
        acc = tl.zeros([M, N], dtype=tl.float32)
        for r in tl.static_range(K // 16):
            ks = r * 16 + tl.arange(0, 16)
            a = tl.load(a_ptr + tl.arange(0, M)[:, None] * lda + ks[None, :])
            b = tl.load(b_ptr + ks[:, None] * b_rs + tl.arange(0, N)[None, :] * b_cs)
            acc += _mm(a, b, PREC)
        return acc
