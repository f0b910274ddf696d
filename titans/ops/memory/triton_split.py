"""Triton forward of the chunk form with the memory split across programs: one launch per chunk, ``P`` programs
per (batch row, head), each owning one tile of the weights (``TH`` hidden columns at depth 2, ``TH`` input rows at
depth 1; ``P = width / TH``).

Why: ``triton_seq.py`` gives a whole head to one program, which walks every chunk; one program fills an SM, so with
fewer (batch row, head) pairs than SMs (long sequences at a small batch) most of the device idles. Here a head's
chunk is spread over ``P`` programs. Measured (docs/benchmarks.md, runs 7 and the split probe before it, H200): 2.8x
the unsplit forward at depth 2 / head dim 128 / chunk 16 with 32 (batch row, head) pairs, but slower wherever the
card is already full (2K tokens at batch 64: 0.4-0.8x) and at depth 1 (one launch per chunk costs more than the
idle SMs). ``triton_seq.SPLIT_FEW`` says where it is used by default; ``KernelConfig.split`` forces it.

What a tile needs from the others is a sum over tiles, once per chunk: the keys through the memory
(``zk = sum_j sigma(k W0[:, j]) W1[j, :]`` at depth 2, ``sum_j k[:, j] W[j, :]`` at depth 1), from which every
program recomputes the errors ``delta_L`` (a ``[chunk, D]`` LayerNorm backward, cheap), and the output (the query
path's terms are sums over tiles too). So launch ``c`` (chunks ``c = -1 .. N``), program ``(bh, j)``:

* sums the key partials of chunk ``c`` (left by launch ``c - 1``), forms the errors, updates its tile of ``W`` and
  ``S`` (``piece.piece_forward``'s update restricted to the tile), writes its partial of chunk ``c``'s output and
  its partial of chunk ``c + 1``'s keys at the new tile (two-slot buffers ``[2, BH, PMAX, BN, D]``);
* ``j = 0`` also finishes chunk ``c - 1``'s output (the sum of partials, LayerNorm, residual);
* launch ``-1`` only computes chunk 0's key partials, launch ``N`` only finishes the last output.

No program waits for another within a launch; the launches order the chunks. The state buffers and saved
activations are those of ``triton_seq.seq_forward_triton`` (every chunk's starting state, keys through the memory,
output before its norm and, at depth 2, ``P_1`` when ``save``: program ``j = 0`` writes the sums, ``P_1`` from
per-tile partials like the output's), so its backward applies unchanged.
"""

from __future__ import annotations

from .triton_config import launch
from .triton_seq import _ACT, HAS_TRITON, dims

if HAS_TRITON:
    import triton
    import triton.language as tl

    from .triton_blocks import (
        _act,
        _act_bwd,
        _coefs,
        _errors,
        _head_rows,
        _ln,
        _mm,
        _norm_params,
        _put,
        _put_square,
        _rows,
        _saved,
        _tile,
    )

    @triton.jit
    def _sum_parts(ptr, base, PMAX, NP: tl.constexpr, BN: tl.constexpr, DV: tl.constexpr):
        """The sum of the ``NP`` partials ``[BN, DV]`` at ``ptr + (base * PMAX + i) * BN * DV``."""
        r = tl.arange(0, BN)[:, None] * DV + tl.arange(0, DV)[None, :]
        acc = tl.zeros([BN, DV], dtype=tl.float32)
        for i in range(NP):
            acc += tl.load(ptr + (base * PMAX + i) * BN * DV + r)
        return acc

    @triton.jit
    def _put_part(ptr, base, PMAX, j, x, BN: tl.constexpr, DV: tl.constexpr):
        r = tl.arange(0, BN)[:, None] * DV + tl.arange(0, DV)[None, :]
        tl.store(ptr + (base * PMAX + j) * BN * DV + r, x)

    @triton.jit(do_not_specialize=["T", "N", "NSLOT", "BH", "H", "CHUNK", "PMAX", "c"])
    def _split_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, sq_b, sq_h, sq_t, sk_b, sk_h, sk_t, sv_b, sv_h, sv_t,
                          so_b, so_h, so_t, bg_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr,
                          W0_ptr, S0_ptr, W1_ptr, S1_ptr, lnw_ptr, lnb_ptr, acts_ptr, zk_ptr, op_ptr, pp_ptr,
                          T, N, NSLOT, BH, H, CHUNK, PMAX, c,
                          L: tl.constexpr, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr,
                          TH: tl.constexpr, ACT: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr,
                          PREC: tl.constexpr, SAVE: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        j = tl.program_id(1)
        b, h, qb, kb, vb = _head_rows(pid, H, q_ptr, sq_b, sq_h, k_ptr, sk_b, sk_h, v_ptr, sv_b, sv_h)
        rn = tl.arange(0, BN)
        rv = tl.arange(0, DV)
        ob = o_ptr + b * so_b + h * so_h
        lw, lb = _norm_params(lnw_ptr, lnb_ptr, h, DV, NORM)
        D0: tl.constexpr = DH if L == 2 else DV
        NP: tl.constexpr = (DH if L == 2 else DK) // TH
        if c == -1:  # chunk 0's key partials at the initial weights (slot 0)
            mask = rn < CHUNK
            if L == 2:
                k = _rows(kb, sk_t, rn, mask, 0, DK)
                zk = _mm(_act(_mm(k, _tile(W0_ptr + pid * NSLOT * DK * D0, 0, j * TH, DH, DK, TH), PREC), ACT),
                         _tile(W1_ptr + pid * NSLOT * DH * DV, j * TH, 0, DV, TH, DV), PREC)
            else:
                zk = _mm(_rows(kb, sk_t, rn, mask, j * TH, TH),
                         _tile(W0_ptr + pid * NSLOT * DK * D0, j * TH, 0, DV, TH, DV), PREC)
            _put_part(zk_ptr, pid, PMAX, j, zk, BN, DV)
        if c >= 0 and c < N:
            t = c * CHUNK + rn
            mask = (rn < CHUNK) & (t < T)
            t2 = t + CHUNK
            mask2 = (rn < CHUNK) & (t2 < T)
            k = _rows(kb, sk_t, t, mask, 0, DK)
            v = _rows(vb, sv_t, t, mask, 0, DV)
            si = pid * NSLOT + c % NSLOT
            so = pid * NSLOT + (c + 1) % NSLOT
            zk = _sum_parts(zk_ptr, (c % 2) * BH + pid, PMAX, NP, BN, DV)
            if SAVE:  # noqa: SIM102 (SAVE is a constexpr, j is not)
                if j == 0:
                    _put(_saved(acts_ptr, pid * N + c, 0, L, NORM, BN, DV), 0, 0, DV, zk, BN, DV)
            dlast, e, xk, rk = _errors(zk, k, v, lw, lb, mask, DV, NORM, RES)
            beta0, gamma0, C0, cn0, mn0, bn0, gn0, hn0 = _coefs(bg_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr,
                                                               pid * N + c, BN)
            if L == 2:
                q = _rows(qb, sq_t, t, mask, 0, DK)
                beta1, gamma1, C1, cn1, mn1, bn1, gn1, hn1 = _coefs(bg_ptr, C_ptr, cn_ptr, mn_ptr, scal_ptr,
                                                                   (BH + pid) * N + c, BN)
                G0j = _tile(W0_ptr + si * DK * D0, 0, j * TH, DH, DK, TH)
                S0j = _tile(S0_ptr + si * DK * D0, 0, j * TH, DH, DK, TH)
                W1j = _tile(W1_ptr + si * DH * DV, j * TH, 0, DV, TH, DV)
                S1j = _tile(S1_ptr + si * DH * DV, j * TH, 0, DV, TH, DV)
                z0 = _mm(k, G0j, PREC)
                a1 = _act(z0, ACT)
                d0 = _act_bwd(_mm(dlast, tl.trans(W1j), PREC), z0, ACT)
                CP0 = C0 * _mm(q, tl.trans(k), PREC)
                x1 = _act(beta0[:, None] * _mm(q, G0j, PREC) + gamma0[:, None] * _mm(q, S0j, PREC)
                          - _mm(CP0, d0, PREC), ACT)
                G0n = bn0 * G0j + gn0 * S0j - _mm(tl.trans(k), cn0[:, None] * d0, PREC)
                W1n = bn1 * W1j + gn1 * S1j - _mm(tl.trans(a1), cn1[:, None] * dlast, PREC)
                _put(W0_ptr + so * DK * D0, 0, j * TH, DH, G0n, DK, TH)
                _put(S0_ptr + so * DK * D0, 0, j * TH, DH, hn0 * S0j - _mm(tl.trans(k), mn0[:, None] * d0, PREC),
                     DK, TH)
                _put(W1_ptr + so * DH * DV, j * TH, 0, DV, W1n, TH, DV)
                _put(S1_ptr + so * DH * DV, j * TH, 0, DV, hn1 * S1j - _mm(tl.trans(a1), mn1[:, None] * dlast, PREC),
                     TH, DV)
                P1 = _mm(x1, tl.trans(a1), PREC)  # this tile's share of P_1 (a sum over tiles)
                if SAVE:
                    _put_part(pp_ptr, (c % 2) * BH + pid, PMAX, j, P1, BN, BN)
                zq = (beta1[:, None] * _mm(x1, W1j, PREC) + gamma1[:, None] * _mm(x1, S1j, PREC)
                      - _mm(C1 * P1, dlast, PREC))
                k2 = _rows(kb, sk_t, t2, mask2, 0, DK)
                zk2 = _mm(_act(_mm(k2, G0n, PREC), ACT), W1n, PREC)
            else:
                qj = _rows(qb, sq_t, t, mask, j * TH, TH)
                kj = _rows(kb, sk_t, t, mask, j * TH, TH)
                Wj = _tile(W0_ptr + si * DK * D0, j * TH, 0, DV, TH, DV)
                Sj = _tile(S0_ptr + si * DK * D0, j * TH, 0, DV, TH, DV)
                Wn = bn0 * Wj + gn0 * Sj - _mm(tl.trans(kj), cn0[:, None] * dlast, PREC)
                _put(W0_ptr + so * DK * D0, j * TH, 0, DV, Wn, TH, DV)
                _put(S0_ptr + so * DK * D0, j * TH, 0, DV, hn0 * Sj - _mm(tl.trans(kj), mn0[:, None] * dlast, PREC),
                     TH, DV)
                zq = beta0[:, None] * _mm(qj, Wj, PREC) + gamma0[:, None] * _mm(qj, Sj, PREC)
                if j == 0:  # the term over all input rows at once: one program adds it
                    q = _rows(qb, sq_t, t, mask, 0, DK)
                    zq = zq - _mm(C0 * _mm(q, tl.trans(k), PREC), dlast, PREC)
                zk2 = _mm(_rows(kb, sk_t, t2, mask2, j * TH, TH), Wn, PREC)
            _put_part(op_ptr, (c % 2) * BH + pid, PMAX, j, zq, BN, DV)
            _put_part(zk_ptr, ((c + 1) % 2) * BH + pid, PMAX, j, zk2, BN, DV)
        if c >= 1 and j == 0:  # finish chunk c - 1's output
            t = (c - 1) * CHUNK + rn
            mask = (rn < CHUNK) & (t < T)
            z = _sum_parts(op_ptr, ((c - 1) % 2) * BH + pid, PMAX, NP, BN, DV)
            if SAVE:
                if NORM:
                    _put(_saved(acts_ptr, pid * N + c - 1, 1, L, NORM, BN, DV), 0, 0, DV, z, BN, DV)
                if L == 2:
                    _put_square(_saved(acts_ptr, pid * N + c - 1, 2, L, NORM, BN, DV), 0,
                                _sum_parts(pp_ptr, ((c - 1) % 2) * BH + pid, PMAX, NP, BN, BN), BN)
            if NORM:
                xq, rq = _ln(z, DV)
                z = xq * lw[None, :] + lb[None, :]
            if RES:
                z = z + _rows(qb, sq_t, t, mask, 0, DK)
            tl.store(ob + t[:, None] * so_t + rv[None, :], z.to(o_ptr.dtype.element_ty), mask=mask[:, None])


def split_forward_triton(fargs, q, v, Ws, act, residual, chunk, cfg, norm: bool, save: bool):
    """Fill the output, the state buffers (slot 0: the starting state) and, when ``save``, the saved activations
    over ``N`` chunks, one launch per chunk (``triton_seq.seq_forward_triton`` prepares ``fargs``, its
    ``forward_args``, and calls this when ``cfg.split``).

    Shapes: q ``[B, H, T, Dk]``, v ``[B, H, T, Dv]``; ``Ws``: L float32 ``[B*H, NSLOT, d_in, d_out]``.
    """
    B, H, T, DK, DV, L, N, BN, BH, DH = dims(q, v, Ws, chunk)
    width = DH if L == 2 else DK
    pmax = width // 16  # the most tiles (launch may narrow the configured tile)
    zk = Ws[0].new_empty(2, BH, pmax, BN, DV)
    op = Ws[0].new_empty(2, BH, pmax, BN, DV)
    pp = Ws[0].new_empty(2, BH, pmax, BN, BN) if save and L == 2 else zk  # P_1's partials, for the backward
    head = (*fargs, zk, op, pp, T, N, Ws[0].shape[1], BH, H, chunk, pmax)
    consts = dict(backward=False, L=L, BN=BN, DK=DK, DH=DH, DV=DV, ACT=_ACT[act], NORM=norm, RES=residual,
                  SAVE=save)
    for c in range(-1, N + 1):  # the grid follows the tile that launched (launch narrows one the device refuses)
        launch(_split_fwd_kernel, lambda th: (BH, width // th), (*head, c), cfg=cfg, **consts)
