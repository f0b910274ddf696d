"""Triton kernels for one piece of the chunk form over every (batch row, head) at once: ``piece.piece_forward``'s
forward at depth 2 in four launches (six with ``KernelConfig.vsplit``), for ``chunk.memory_update_chunk``'s loop over
chunks (``KernelConfig.piece``).

Why: ``triton_seq.py`` gives a whole head to one program, which walks every chunk with the head's weights streamed
through it in tiles. Where the weights are large (depth 2, head dim 128: 512 KB of weights and as much momentum per
head) such a program keeps its SM busy at a few percent of the SM's arithmetic, and ``chunk``, whose every product
is batched over all heads, is 2.5x faster (docs/benchmarks.md, runs 13-15). Here each pass of a piece is one launch
with a program per (batch row, head), or per (batch row, head) and hidden tile, so the device holds many small
independent programs, and what crosses tiles goes through global memory between launches. Per piece of ``n`` rows
(``BN``: ``n`` rounded up to a power of two >= 16; the padded rows are zero and never stored), hidden width ``DH``
in tiles of ``TH`` columns:

* ``_keys_kernel`` (a program per head and tile): ``z0 = k G0`` on the tile's columns, kept in a scratch;
* ``_errors_kernel`` (per head): the keys through the memory ``zk = sigma(z0) G1`` (summed over tiles), the errors
  ``delta_L`` (the LayerNorm backward of ``2 (M(k) - v)``) and ``C_0 * (q k^T)``;
* ``_tiles_kernel`` (per head and tile): ``delta_0``, both layers' new weights and momentum on the tile, and the
  queries' first layer ``x_1 = sigma(zeta_0)``, kept;
* ``_output_kernel`` (per head): ``z = beta_1 x_1 W_1 + gamma_1 x_1 S_1 - (C_1 * x_1 a_1^T) delta_L`` (summed over
  tiles), its LayerNorm and the residual.

The backward is ``piece.piece_backward`` (PyTorch), as for ``chunk``, with its recomputation of the piece's
intermediates these launches again (``keep=True``: they store what ``piece_forward(keep=True)`` keeps and skip the
new state). One launch configuration for all four (``KernelConfig``: tile, warps, precision; ``triton_config.launch``
halves a launch's tile while the device refuses it and runs tf32x3 products laid out 8 wide as ieee). The default
forward at depth 2 / 64-row chunks where a call has enough (batch row, head) pairs (``triton_config.PIECE_FROM``):
on an H200 (runs 16-19, docs/benchmarks.md) the tiles kernel reading its rows in slices ran 3.1x faster than
when it held them whole (spills), and the forward at 4 warps with tf32x3 products 1.3-1.8x ``chunk``'s there.
"""

from __future__ import annotations

import torch

from .common import layer_norm
from .triton_blocks import HAS_TRITON
from .triton_config import KernelConfig, config_for, launch
from .triton_seq import _ACT, block_rows, pack_coefficients

if HAS_TRITON:
    import triton
    import triton.language as tl

    from .triton_blocks import _act, _act_bwd, _errors, _ln, _mm, _norm_params

    @triton.jit
    def _tok(ptr, s_b, s_h, s_t, b, h, rn, mask, C: tl.constexpr):
        """Rows ``rn`` (zero where ``~mask``) of batch row ``b``, head ``h`` of a token tensor, float32 ``[BN, C]``."""
        c = tl.arange(0, C)
        return tl.load(ptr + b * s_b + h * s_h + rn[:, None] * s_t + c[None, :], mask=mask[:, None],
                       other=0.0).to(tl.float32)

    @triton.jit
    def _wt(ptr, s_b, s_h, b, h, r0, c0, ld, R: tl.constexpr, C: tl.constexpr):
        """The ``[R, C]`` tile at ``(r0, c0)`` of batch row ``b``, head ``h`` of ``[B, H, ., ld]`` weights."""
        r = r0 + tl.arange(0, R)
        c = c0 + tl.arange(0, C)
        return tl.load(ptr + b * s_b + h * s_h + r[:, None] * ld + c[None, :])

    @triton.jit
    def _hid(ptr, pid, c0, BN: tl.constexpr, DH: tl.constexpr, TH: tl.constexpr):
        """Columns ``c0 .. c0 + TH`` of head ``pid``'s ``[BN, DH]`` scratch rows."""
        rn = tl.arange(0, BN)
        c = c0 + tl.arange(0, TH)
        return ptr + pid * BN * DH + rn[:, None] * DH + c[None, :]

    @triton.jit
    def _column_block(H, NV: tl.constexpr):
        """This program's (batch row, head) ``pid`` (and its ``b``, ``h``) and its block ``vb`` of ``NV`` blocks of
        ``TV`` output columns, the blocks of a head adjacent in launch order."""
        g = tl.program_id(0).to(tl.int64)
        pid, vb = g // NV, g % NV
        return pid, vb, pid // H, pid % H

    @triton.jit
    def _keys_through(z0_ptr, G1_ptr, sg1_b, sg1_h, pid, b, h, c0, BN: tl.constexpr, DH: tl.constexpr,
                      DV: tl.constexpr, TH: tl.constexpr, TV: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr):
        """Columns ``c0 .. c0 + TV`` of the keys through the memory, ``sigma(z0) G1`` (``[BN, TV]``), summed over
        the hidden tiles of ``z0``'s scratch."""
        zk = tl.zeros([BN, TV], dtype=tl.float32)
        for j in range(DH // TH):
            a1 = _act(tl.load(_hid(z0_ptr, pid, j * TH, BN, DH, TH)), ACT)
            zk += _mm(a1, _wt(G1_ptr, sg1_b, sg1_h, b, h, j * TH, c0, DV, TH, TV), PREC)
        return zk

    @triton.jit
    def _keys_kernel(k_ptr, sk_b, sk_h, sk_t, G0_ptr, sg0_b, sg0_h, z0_ptr, n, H, L: tl.constexpr, BN: tl.constexpr,
                     DK: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr, TH: tl.constexpr, PREC: tl.constexpr):
        g = tl.program_id(0).to(tl.int64)  # a head's tiles adjacent in launch order (k from L2), as in _tiles_kernel
        pid, j = g // (DH // TH), g % (DH // TH)
        b, h = pid // H, pid % H
        rn = tl.arange(0, BN)
        k = _tok(k_ptr, sk_b, sk_h, sk_t, b, h, rn, rn < n, DK)
        tl.store(_hid(z0_ptr, pid, j * TH, BN, DH, TH), _mm(k, _wt(G0_ptr, sg0_b, sg0_h, b, h, 0, j * TH, DH, DK, TH),
                                                              PREC))

    @triton.jit
    def _errors_kernel(q_ptr, sq_b, sq_h, sq_t, k_ptr, sk_b, sk_h, sk_t, v_ptr, sv_b, sv_h, sv_t, G1_ptr, sg1_b,
                       sg1_h, lnw_ptr, lnb_ptr, C_ptr, z0_ptr, dl_ptr, cp_ptr, zk_ptr, e_ptr, n, H,
                       L: tl.constexpr, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr,
                       TH: tl.constexpr, ACT: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr,
                       PREC: tl.constexpr, KEEP: tl.constexpr, NV: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        b, h = pid // H, pid % H
        rn = tl.arange(0, BN)
        rv = tl.arange(0, DV)
        mask = rn < n
        rows = pid * BN * DV + rn[:, None] * DV + rv[None, :]
        if NV > 1:  # _zk_kernel formed it, in NV blocks of columns
            zk = tl.load(zk_ptr + rows)
        else:
            zk = _keys_through(z0_ptr, G1_ptr, sg1_b, sg1_h, pid, b, h, 0, BN, DH, DV, TH, DV, ACT, PREC)
        k = _tok(k_ptr, sk_b, sk_h, sk_t, b, h, rn, mask, DK)
        v = _tok(v_ptr, sv_b, sv_h, sv_t, b, h, rn, mask, DV)
        lw, lb = _norm_params(lnw_ptr, lnb_ptr, h, DV, NORM)
        dlast, e, _, _ = _errors(zk, k, v, lw, lb, mask, DV, NORM, RES)
        tl.store(dl_ptr + rows, dlast)
        if KEEP:  # for piece_backward: the keys through the memory and their error
            if NV == 1:
                tl.store(zk_ptr + rows, zk)
            tl.store(e_ptr + rows, e)
        q = _tok(q_ptr, sq_b, sq_h, sq_t, b, h, rn, mask, DK)
        sq = pid * BN * BN + rn[:, None] * BN + rn[None, :]
        tl.store(cp_ptr + sq, tl.load(C_ptr + sq) * _mm(q, tl.trans(k), PREC))  # layer 0's C: the first BH

    @triton.jit
    def _zk_kernel(z0_ptr, G1_ptr, sg1_b, sg1_h, zk_ptr, n, H, L: tl.constexpr, BN: tl.constexpr, DK: tl.constexpr,
                   DH: tl.constexpr, DV: tl.constexpr, TH: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr,
                   NV: tl.constexpr):
        # The keys through the memory, zk = sigma(z0) G1, on one of NV blocks of columns per program (KernelConfig
        # .vsplit: NV times the programs of _errors_kernel's own loop, for calls with few (batch row, head) pairs).
        TV: tl.constexpr = DV // NV
        pid, vb, b, h = _column_block(H, NV)
        rn = tl.arange(0, BN)
        rv = vb * TV + tl.arange(0, TV)
        zk = _keys_through(z0_ptr, G1_ptr, sg1_b, sg1_h, pid, b, h, vb * TV, BN, DH, DV, TH, TV, ACT, PREC)
        tl.store(zk_ptr + pid * BN * DV + rn[:, None] * DV + rv[None, :], zk)

    @triton.jit
    def _tiles_kernel(q_ptr, sq_b, sq_h, sq_t, k_ptr, sk_b, sk_h, sk_t, G1_ptr, sg1_b, sg1_h,
                      W0_ptr, sw0_b, sw0_h, S0_ptr, ss0_b, ss0_h, W1_ptr, sw1_b, sw1_h, S1_ptr, ss1_b, ss1_h,
                      W0o_ptr, S0o_ptr, W1o_ptr, S1o_ptr, bg_ptr, cn_ptr, mn_ptr, scal_ptr, z0_ptr, dl_ptr, cp_ptr,
                      x1_ptr, t0_ptr, d0_ptr, a1_ptr, zeta_ptr, n, H, BH, L: tl.constexpr, BN: tl.constexpr,
                      DK: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr, TH: tl.constexpr, ACT: tl.constexpr,
                      PREC: tl.constexpr, KEEP: tl.constexpr, STATE: tl.constexpr):
        # One program per (head, tile), the tiles of a head adjacent in launch order: they read the same rows of
        # q, k and delta_L, which then come from L2 rather than memory. The rows are read, and the weights written,
        # in slices of TK columns, so that a program holds [BN, TH] sums and [BN, TK] slices rather than whole
        # [BN, D] rows (255 registers and 1,641 spill instructions a chunk at head dim 128 when it held them).
        P: tl.constexpr = DH // TH
        TK: tl.constexpr = min(32, min(TH, min(DK, DV)))  # triton_piece.slice_width
        g = tl.program_id(0).to(tl.int64)
        pid, j = g // P, g % P
        b, h = pid // H, pid % H
        rn = tl.arange(0, BN)
        rs = tl.arange(0, TK)
        c = j * TH + tl.arange(0, TH)
        mask = rn < n
        # Coefficients, zero on padded rows (layer l of head pid at l * BH + pid): beta and gamma [L, BH, 2, BN],
        # c_n and m_n [L, BH, BN], (beta_n, gamma_n, h_n) [L, BH, 3].
        beta0 = tl.load(bg_ptr + pid * 2 * BN + rn)
        gamma0 = tl.load(bg_ptr + pid * 2 * BN + BN + rn)
        cn0 = tl.load(cn_ptr + pid * BN + rn)
        mn0 = tl.load(mn_ptr + pid * BN + rn)
        cn1 = tl.load(cn_ptr + (BH + pid) * BN + rn)
        mn1 = tl.load(mn_ptr + (BH + pid) * BN + rn)
        bn0, gn0, hn0 = tl.load(scal_ptr + pid * 3), tl.load(scal_ptr + pid * 3 + 1), tl.load(scal_ptr + pid * 3 + 2)
        o1 = (BH + pid) * 3
        bn1, gn1, hn1 = tl.load(scal_ptr + o1), tl.load(scal_ptr + o1 + 1), tl.load(scal_ptr + o1 + 2)

        z0 = tl.load(_hid(z0_ptr, pid, j * TH, BN, DH, TH))
        a1 = _act(z0, ACT)
        # t0 = delta_L G1[j, :]^T over slices s of delta_L's columns; the second layer's new weights and momentum
        # on rows j, columns s, from the same slice: - a_1^T (c_n delta_L), - a_1^T (m_n delta_L).
        t0 = tl.zeros([BN, TH], dtype=tl.float32)
        for s in range(DV // TK):
            dls = tl.load(dl_ptr + pid * BN * DV + rn[:, None] * DV + (s * TK + rs)[None, :])
            t0 += _mm(dls, tl.trans(_wt(G1_ptr, sg1_b, sg1_h, b, h, j * TH, s * TK, DV, TH, TK)), PREC)
            if STATE:  # the state after the piece (piece_backward's recomputation does not need it)
                W1s = _wt(W1_ptr, sw1_b, sw1_h, b, h, j * TH, s * TK, DV, TH, TK)
                S1s = _wt(S1_ptr, ss1_b, ss1_h, b, h, j * TH, s * TK, DV, TH, TK)
                w1 = pid * DH * DV + c[:, None] * DV + (s * TK + rs)[None, :]
                tl.store(W1o_ptr + w1, bn1 * W1s + gn1 * S1s - _mm(tl.trans(a1), cn1[:, None] * dls, PREC))
                tl.store(S1o_ptr + w1, hn1 * S1s - _mm(tl.trans(a1), mn1[:, None] * dls, PREC))
        d0 = _act_bwd(t0, z0, ACT)
        # The queries' first layer on columns j, zeta_0 = beta_0 q W0 + gamma_0 q S0 - (C_0 * q k^T) delta_0, and
        # the first layer's new weights and momentum on rows s, columns j: - k^T (c_n delta_0), - k^T (m_n delta_0),
        # over slices s of q's and k's columns.
        CP0 = tl.load(cp_ptr + pid * BN * BN + rn[:, None] * BN + rn[None, :])
        zeta0 = -_mm(CP0, d0, PREC)
        cd0, md0 = cn0[:, None] * d0, mn0[:, None] * d0
        for s in range(DK // TK):
            cols = s * TK + rs
            qs = tl.load(q_ptr + b * sq_b + h * sq_h + rn[:, None] * sq_t + cols[None, :], mask=mask[:, None],
                         other=0.0).to(tl.float32)
            W0s = _wt(W0_ptr, sw0_b, sw0_h, b, h, s * TK, j * TH, DH, TK, TH)
            S0s = _wt(S0_ptr, ss0_b, ss0_h, b, h, s * TK, j * TH, DH, TK, TH)
            zeta0 += _mm(beta0[:, None] * qs, W0s, PREC) + _mm(gamma0[:, None] * qs, S0s, PREC)
            if STATE:
                ks = tl.load(k_ptr + b * sk_b + h * sk_h + rn[:, None] * sk_t + cols[None, :], mask=mask[:, None],
                             other=0.0).to(tl.float32)
                w0 = pid * DK * DH + cols[:, None] * DH + c[None, :]
                tl.store(W0o_ptr + w0, bn0 * W0s + gn0 * S0s - _mm(tl.trans(ks), cd0, PREC))
                tl.store(S0o_ptr + w0, hn0 * S0s - _mm(tl.trans(ks), md0, PREC))
        tl.store(_hid(x1_ptr, pid, j * TH, BN, DH, TH), _act(zeta0, ACT))
        if KEEP:  # for piece_backward
            tl.store(_hid(t0_ptr, pid, j * TH, BN, DH, TH), t0)
            tl.store(_hid(d0_ptr, pid, j * TH, BN, DH, TH), d0)
            tl.store(_hid(a1_ptr, pid, j * TH, BN, DH, TH), a1)
            tl.store(_hid(zeta_ptr, pid, j * TH, BN, DH, TH), zeta0)

    @triton.jit
    def _output_kernel(q_ptr, sq_b, sq_h, sq_t, o_ptr, so_b, so_h, so_t, W1_ptr, sw1_b, sw1_h, S1_ptr, ss1_b,
                       ss1_h, lnw_ptr, lnb_ptr, bg_ptr, C_ptr, z0_ptr, dl_ptr, x1_ptr, zq_ptr, cp1_ptr, n, H, BH,
                       L: tl.constexpr, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr,
                       TH: tl.constexpr, ACT: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr,
                       PREC: tl.constexpr, KEEP: tl.constexpr, NV: tl.constexpr):
        # One program per head, or per head and block of TV output columns (NV > 1, KernelConfig.vsplit: each block
        # forms P_1 again, and _norm_kernel then normalizes the rows).
        TV: tl.constexpr = DV // NV
        pid, vb, b, h = _column_block(H, NV)
        rn = tl.arange(0, BN)
        rv = vb * TV + tl.arange(0, TV)
        mask = rn < n
        beta1 = tl.load(bg_ptr + (BH + pid) * 2 * BN + rn)
        gamma1 = tl.load(bg_ptr + (BH + pid) * 2 * BN + BN + rn)
        # beta_1 x_1 W_1 + gamma_1 x_1 S_1 as (beta_1 x_1) W_1 + (gamma_1 x_1) S_1: one [BN, DV] sum held, not two
        z = tl.zeros([BN, TV], dtype=tl.float32)
        P1 = tl.zeros([BN, BN], dtype=tl.float32)
        for j in range(DH // TH):
            x1 = tl.load(_hid(x1_ptr, pid, j * TH, BN, DH, TH))
            a1 = _act(tl.load(_hid(z0_ptr, pid, j * TH, BN, DH, TH)), ACT)
            z += _mm(beta1[:, None] * x1, _wt(W1_ptr, sw1_b, sw1_h, b, h, j * TH, vb * TV, DV, TH, TV), PREC)
            z += _mm(gamma1[:, None] * x1, _wt(S1_ptr, ss1_b, ss1_h, b, h, j * TH, vb * TV, DV, TH, TV), PREC)
            P1 += _mm(x1, tl.trans(a1), PREC)
        C1 = tl.load(C_ptr + (BH + pid) * BN * BN + rn[:, None] * BN + rn[None, :])
        dlast = tl.load(dl_ptr + pid * BN * DV + rn[:, None] * DV + rv[None, :])
        z -= _mm(C1 * P1, dlast, PREC)
        if KEEP or NV > 1:  # the output before its norm (piece_backward's, or _norm_kernel's), and C_1 * P_1
            tl.store(zq_ptr + pid * BN * DV + rn[:, None] * DV + rv[None, :], z)
        if KEEP:  # noqa: SIM102 (vb is not a constant: Triton's ``and`` takes constants only)
            if vb == 0:
                tl.store(cp1_ptr + pid * BN * BN + rn[:, None] * BN + rn[None, :], C1 * P1)
        if NV == 1:
            _finish(q_ptr, sq_b, sq_h, sq_t, o_ptr, so_b, so_h, so_t, lnw_ptr, lnb_ptr, z, b, h, rn, mask, DK, DV,
                    NORM, RES)

    @triton.jit
    def _norm_kernel(q_ptr, sq_b, sq_h, sq_t, o_ptr, so_b, so_h, so_t, lnw_ptr, lnb_ptr, zq_ptr, n, H,
                     L: tl.constexpr, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr,
                     TH: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr, PREC: tl.constexpr):
        # After _output_kernel in blocks of columns: each head's rows normalized, the residual, the output.
        pid = tl.program_id(0).to(tl.int64)
        b, h = pid // H, pid % H
        rn = tl.arange(0, BN)
        z = tl.load(zq_ptr + pid * BN * DV + rn[:, None] * DV + tl.arange(0, DV)[None, :])
        _finish(q_ptr, sq_b, sq_h, sq_t, o_ptr, so_b, so_h, so_t, lnw_ptr, lnb_ptr, z, b, h, rn, rn < n, DK, DV,
                NORM, RES)

    @triton.jit
    def _finish(q_ptr, sq_b, sq_h, sq_t, o_ptr, so_b, so_h, so_t, lnw_ptr, lnb_ptr, z, b, h, rn, mask,
                DK: tl.constexpr, DV: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr):
        """The output rows ``z`` ``[BN, DV]`` of batch row ``b``, head ``h``: LayerNorm, residual, stored."""
        rv = tl.arange(0, DV)
        if NORM:
            lw, lb = _norm_params(lnw_ptr, lnb_ptr, h, DV, NORM)
            xq, _ = _ln(z, DV)
            z = xq * lw[None, :] + lb[None, :]
        if RES:
            z = z + _tok(q_ptr, sq_b, sq_h, sq_t, b, h, rn, mask, DK)
        tl.store(o_ptr + b * so_b + h * so_h + rn[:, None] * so_t + rv[None, :], z.to(o_ptr.dtype.element_ty),
                 mask=mask[:, None])


def slice_width(TH: int, DK: int, DV: int) -> int:
    """The width ``TK`` of the slices in which ``_tiles_kernel`` reads q, k and ``delta_L`` and writes the weights
    (the kernel computes the same expression): its loops run ``DV // TK`` and ``DK // TK`` times."""
    return min(32, TH, DK, DV)


def _rowmajor(w: torch.Tensor) -> torch.Tensor:
    """``w`` ``[B, H, r, c]`` with its rows contiguous (batch and head strides are passed to the kernels, so an
    expanded batch is not copied)."""
    return w if w.stride(-1) == 1 and w.stride(-2) == w.shape[-1] else w.contiguous()


def piece_forward_triton(q, k, v, coef, G, W, S, norm, act, residual, keep: bool = False,
                         cfg: KernelConfig | None = None, state: bool | None = None):
    """``piece.piece_forward`` of a depth-2 memory in four launches over every (batch row, head) (six with
    ``cfg.vsplit``).

    q, k ``[B, H, n, DK]``, v ``[B, H, n, DV]`` (computed in float32), ``coef`` as ``chunk._run_piece`` slices
    ``chunk.decay_coefficients`` (``[L, B, H, n(, n)]``, and ``[L, B, H]`` for the end scalars), G, W, S: two float32
    tensors each, ``[B, H, DK, DH]`` and ``[B, H, DH, DV]``, ``norm``: ``(weight, bias)`` ``[H, DV]`` or None,
    ``act`` a name of ``triton_seq._ACT``. Returns ``(o [B, H, n, DV] in q's dtype, [W0, W1] new, [S0, S1] new)``,
    float32 contiguous; with ``keep`` (``piece.piece_backward``'s recomputation) ``(o, saved)`` instead, the
    intermediates ``piece_forward(keep=True)`` returns (views of float32 scratch), and no new state; with ``keep``
    and ``state`` both, ``(o, W_new, S_new, saved)`` (a forward that keeps them for the backward,
    ``KernelConfig.save``). ``cfg``: tile, warps, stages, precision, ``vsplit`` (default: the forward's configuration
    of this shape, ``triton_config.config_for``).
    """
    state = not keep if state is None else state
    B, H, n, DK = q.shape
    DH, DV = W[0].shape[-1], v.shape[-1]
    BN, BH = block_rows(n), B * H
    cfg = cfg or config_for(False, 2, BN, DK, DH, DV)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    G, W, S = ([_rowmajor(w) for w in ws] for ws in (G, W, S))
    f32 = dict(dtype=torch.float32, device=q.device)
    # [L, B, H, 2, BN] (beta, gamma), [L, B, H, BN, BN], [L, B, H, BN] (c_n, m_n), [L, B, H, 3], zero-padded
    bg, Cp, cn, mn, scal = pack_coefficients(coef, BN)
    lnw, lnb = (norm[0].contiguous(), norm[1].contiguous()) if norm is not None else (scal, scal)  # unread without
    o = torch.empty(B, H, n, DV, dtype=q.dtype, device=q.device)
    Wn = [torch.empty(B, H, *w.shape[-2:], **f32) for w in W]
    Sn = [torch.empty(B, H, *w.shape[-2:], **f32) for w in W]
    z0, x1 = torch.empty(BH, BN, DH, **f32), torch.empty(BH, BN, DH, **f32)
    dl, cp = torch.empty(BH, BN, DV, **f32), torch.empty(BH, BN, BN, **f32)
    # what the backward's recomputation keeps besides: t0, delta_0, a_1, zeta_0; zk, e; zq, C_1 P_1 (else unread)
    kept = ([torch.empty(BH, BN, DH, **f32) for _ in range(4)] + [torch.empty(BH, BN, DV, **f32) for _ in range(3)]
            + [torch.empty(BH, BN, BN, **f32)] if keep else [z0] * 8)
    # KernelConfig.vsplit: the per-head passes over the output's columns in NV blocks (at least 16 wide), whose
    # scratch for zk and the output before its norm the kept intermediates' are where the backward keeps them
    NV = max(1, min(cfg.vsplit, DV // 16))
    if NV > 1 and not keep:
        kept[4], kept[6] = torch.empty(BH, BN, DV, **f32), torch.empty(BH, BN, DV, **f32)

    def tok(t):
        return t, t.stride(0), t.stride(1), t.stride(2)

    def wt(w):
        return w, w.stride(0), w.stride(1)

    shape = dict(backward=False, L=2, BN=BN, DK=DK, DH=DH, DV=DV, cfg=cfg)
    flags = dict(NORM=norm is not None, RES=residual)
    act_c = _ACT[act]
    launch(_keys_kernel, lambda th: (BH * (DH // th),), (*tok(k), *wt(G[0]), z0, n, H), part="keys", **shape)
    if NV > 1:
        launch(_zk_kernel, (BH * NV,), (z0, *wt(G[1]), kept[4], n, H), part="zk", ACT=act_c, NV=NV, **shape)
    launch(_errors_kernel, (BH,), (*tok(q), *tok(k), *tok(v), *wt(G[1]), lnw, lnb, Cp, z0, dl, cp, *kept[4:6], n, H),
           part="errors", ACT=act_c, KEEP=keep, NV=NV, **flags, **shape)
    launch(_tiles_kernel, lambda th: (BH * (DH // th),),
           (*tok(q), *tok(k), *wt(G[1]), *wt(W[0]), *wt(S[0]), *wt(W[1]), *wt(S[1]), Wn[0], Sn[0], Wn[1], Sn[1], bg,
            cn, mn, scal, z0, dl, cp, x1, *kept[:4], n, H, BH), part="tiles", ACT=act_c, KEEP=keep, STATE=state,
           **shape)
    launch(_output_kernel, (BH * NV,), (*tok(q), *tok(o), *wt(W[1]), *wt(S[1]), lnw, lnb, bg, Cp, z0, dl, x1,
                                        kept[6], kept[7], n, H, BH), part="output", ACT=act_c, KEEP=keep, NV=NV,
           **flags, **shape)
    if NV > 1:
        launch(_norm_kernel, (BH,), (*tok(q), *tok(o), lnw, lnb, kept[6], n, H), part="norm", **flags, **shape)
    if not keep:
        return o, Wn, Sn
    saved = _saved(q, k, norm, B, H, n, BN, kept, z0, dl, x1, cp)
    return (o, Wn, Sn, saved) if state else (o, saved)


def _saved(q, k, norm, B, H, n, BN, kept, z0, dl, x1, cp):
    """The kernels' scratch as ``piece_forward(keep=True)``'s intermediates (views of it, rows past ``n`` cut)."""
    rows = lambda t: t.view(B, H, BN, t.shape[-1])[:, :, :n]  # noqa: E731
    square = lambda t: t.view(B, H, BN, BN)[:, :, :n, :n]  # noqa: E731
    t0, d0, a1, zeta0, zk, e, zq = (rows(t) for t in kept[:7])
    xhat_q = r_q = xhat_k = r_k = None
    if norm is not None:
        _, xhat_q, r_q = layer_norm(zq, *norm)
        _, xhat_k, r_k = layer_norm(zk, *norm)
    return dict(a=[k, a1], zs=[rows(z0), zk], ts=[t0, None], deltas=[d0, rows(dl)], e=e, xs=[q, rows(x1)],
                zetas=[zeta0, zq], CPs=[square(cp), square(kept[7])], xhat_q=xhat_q, r_q=r_q, xhat_k=xhat_k, r_k=r_k)

