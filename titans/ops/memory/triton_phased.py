"""The depth-2 forward's tile loop in passes (``KernelConfig.phased``), for ``triton_seq._seq_fwd_kernel``.

Why: the one-loop forward holds, through its loop over the hidden width, the chunk's output sum ``z`` and ``P_1``
(``[BN, DV]``, ``[BN, BN]``) beside what every tile needs (the errors ``delta_L``, the query-key products ``C_0 P_0``,
q and k) and a tile's dozen products: at 64-row chunks that is more than a program's registers, and ptxas spills
(1,400 values per thread at head dim 128 on the H100, run 12), to memory each thread writes and reads on every
tile. Here the loop is five passes over the tiles, each holding little, and what crosses from one pass to the next
goes through a per-program scratch in global memory (:func:`scratch_width` floats: ``z0``, ``x1``, ``delta_0``
``[BN, DH]``, ``delta_L`` ``[BN, DV]``, ``C_0 P_0`` ``[BN, BN]``), written once and read per tile:

1. keys: ``zk = sum_j sigma(k G0[:, j]) W1[j, :]`` as ``triton_blocks._keys``, keeping ``z0 = k G0``; the caller
   then forms ``delta_L`` and ``C_0 P_0`` and keeps them (:func:`_keep_errors`);
2. per tile, ``delta_0 = sigma'(z0) * (delta_L W1^T)`` and the queries' hidden activations
   ``x1 = sigma(beta q G0 + gamma q S0 - (C_0 P_0) delta_0)``, both kept;
3. the first layer's weights and momentum after the chunk, from ``k`` and ``delta_0``;
4. ``z = sum_j (beta x1) W1 + (gamma x1) S1`` and ``P_1 = sum_j x1 a1^T``, the only sums held through a loop;
5. the second layer's weights and momentum after the chunk, from ``a1 = sigma(z0)`` and ``delta_L``.

Barriers follow the keeping of ``delta_L`` and pass 2 (a pass reads the scratch in another thread layout than the
one that wrote it). The arithmetic is the one-loop forward's, term for term (the same products, summed in the same
order over tiles). q and k are read per tile as with ``KernelConfig.reload``. Compiled offline (Triton 3.6, sm_90;
docs/benchmarks.md, "The forward and the backward in passes" and "Holding less through the passes") the spill
instructions a chunk runs fall 79-100% against the default forward at the four depth-2 shapes, with 31-57% of its
shared memory; not yet timed on a GPU.

Every loop here is ``tl.range(..., disable_licm=True)``: Triton would otherwise hoist what a pass reads per tile
(the chunk-wide operands, the scratch) out of the loop as invariant, and so hold it through the loop after all
(compiled offline at commit 4f496f2, which made it so, the spill instructions run per chunk of the kernels in
passes fell 3-27% more at the 64-row-chunk shapes; the one-loop kernels' loops keep the hoisting: without it some
spilled less and others more).
"""

from __future__ import annotations

from .triton_blocks import HAS_TRITON


def scratch_width(BN: int, DH: int, DV: int) -> int:
    """Floats of scratch per program: ``z0``, ``x1``, ``delta_0`` (``[BN, DH]`` each), ``delta_L``, ``C_0 P_0``."""
    return 3 * BN * DH + BN * DV + BN * BN


if HAS_TRITON:
    import triton
    import triton.language as tl

    from .triton_blocks import _act, _act_bwd, _cols, _mm, _put, _put_t, _rows, _tile, _tile_t

    @triton.jit
    def _keys_kept(kb, s_t, t, mask, W0i, W1i, scr, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr,
                   DV: tl.constexpr, TH: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr):
        """Pass 1: the keys through the memory ``zk [BN, DV]``, with ``z0 = k G0`` (``[BN, DH]``) left in
        ``scr``."""
        zk = tl.zeros([BN, DV], dtype=tl.float32)
        for j in tl.range(0, DH // TH, disable_licm=True):
            z0 = _mm(_rows(kb, s_t, t, mask, 0, DK), _tile(W0i, 0, j * TH, DH, DK, TH), PREC)
            _put(scr, 0, j * TH, DH, z0, BN, TH)
            zk += _mm(_act(z0, ACT), _tile(W1i, j * TH, 0, DV, TH, DV), PREC)
        return zk

    @triton.jit
    def _keep_errors(scr, dlast, CP0, BN: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr):
        """Keep ``delta_L`` ``[BN, DV]`` and ``C_0 P_0`` ``[BN, BN]`` in the scratch (after ``z0`` and ``x1``)."""
        _put(scr + 3 * BN * DH, 0, 0, DV, dlast, BN, DV)
        _put(scr + 3 * BN * DH + BN * DV, 0, 0, BN, CP0, BN, BN)

    @triton.jit
    def _kept_errors(scr, BN: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr):
        """``delta_L`` as :func:`_keep_errors` kept it."""
        return _tile(scr + 3 * BN * DH, 0, 0, DV, BN, DV)

    @triton.jit
    def _first_layer(qb, sq_t, beta0, gamma0, W0i, S0i, W1i, scr, t, mask, BN: tl.constexpr, DK: tl.constexpr,
                     DH: tl.constexpr, DV: tl.constexpr, TH: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr):
        """Pass 2: per hidden tile, ``delta_0`` and ``x1`` into the scratch."""
        for j in tl.range(0, DH // TH, disable_licm=True):
            z0 = _tile(scr, 0, j * TH, DH, BN, TH)
            d0 = _act_bwd(_mm(_kept_errors(scr, BN, DH, DV), tl.trans(_tile(W1i, j * TH, 0, DV, TH, DV)), PREC), z0,
                          ACT)
            _put(scr + 2 * BN * DH, 0, j * TH, DH, d0, BN, TH)
            if BN > 16:  # (C_0 P_0) delta_0 over the rows 16 at a time, delta_0 read back as other threads wrote it
                tl.debug_barrier()  # (compiled offline: fewer spills at head dim 128 / 64-row chunks, a few more
                # at head dim 64, many more at 16-row chunks, where it is not used)
                CPd0 = _cols(scr + 3 * BN * DH + BN * DV, BN, scr + 2 * BN * DH + j * TH, DH, 1, BN, TH, BN, PREC)
            else:
                CPd0 = _mm(_tile(scr + 3 * BN * DH + BN * DV, 0, 0, BN, BN, BN), d0, PREC)
            qt = _rows(qb, sq_t, t, mask, 0, DK)
            zeta0 = (beta0[:, None] * _mm(qt, _tile(W0i, 0, j * TH, DH, DK, TH), PREC)
                     + gamma0[:, None] * _mm(qt, _tile(S0i, 0, j * TH, DH, DK, TH), PREC) - CPd0)
            _put(scr + BN * DH, 0, j * TH, DH, _act(zeta0, ACT), BN, TH)

    @triton.jit
    def _first_state(kb, sk_t, t, mask, cn0, mn0, bn0, gn0, hn0, W0i, S0i, W0o, S0o, scr, BN: tl.constexpr,
                     DK: tl.constexpr, DH: tl.constexpr, TH: tl.constexpr, PREC: tl.constexpr):
        """Pass 3: the first layer's weights and momentum after the chunk (``W0o``, ``S0o``), from ``delta_0``."""
        for j in tl.range(0, DH // TH, disable_licm=True):
            G0j = _tile(W0i, 0, j * TH, DH, DK, TH)
            S0j = _tile(S0i, 0, j * TH, DH, DK, TH)
            d0 = _tile(scr + 2 * BN * DH, 0, j * TH, DH, BN, TH)
            kt = tl.trans(_rows(kb, sk_t, t, mask, 0, DK))
            _put(W0o, 0, j * TH, DH, bn0 * G0j + gn0 * S0j - _mm(kt, cn0[:, None] * d0, PREC), DK, TH)
            _put(S0o, 0, j * TH, DH, hn0 * S0j - _mm(kt, mn0[:, None] * d0, PREC), DK, TH)

    @triton.jit
    def _second_layer(beta1, gamma1, W1i, S1i, scr, BN: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr,
                      TH: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr):
        """Pass 4: ``(z, P_1)``, the output before the second layer's intra-chunk term (``- (C_1 P_1)
        delta_L``, the caller's) and ``x1 a1^T``."""
        z = tl.zeros([BN, DV], dtype=tl.float32)
        P1 = tl.zeros([BN, BN], dtype=tl.float32)
        for j in tl.range(0, DH // TH, disable_licm=True):
            x1 = _tile(scr + BN * DH, 0, j * TH, DH, BN, TH)
            z += _mm(beta1[:, None] * x1, _tile(W1i, j * TH, 0, DV, TH, DV), PREC)
            z += _mm(gamma1[:, None] * x1, _tile(S1i, j * TH, 0, DV, TH, DV), PREC)
            P1 += _mm(x1, tl.trans(_act(_tile(scr, 0, j * TH, DH, BN, TH), ACT)), PREC)
        return z, P1

    @triton.jit
    def _second_state(cn1, mn1, bn1, gn1, hn1, W1i, S1i, W1o, S1o, scr, BN: tl.constexpr, DH: tl.constexpr,
                      DV: tl.constexpr, TH: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr):
        """Pass 5: the second layer's weights and momentum after the chunk (``W1o``, ``S1o``). At head dim 128 and
        more with tf32x3 products they are formed transposed (``[DV, TH]``: the products' rows the head dim rather
        than the tile's few, as the tensor cores' warp-group products want at least 64): compiled offline that cut
        this loop's spills 4x at head dim 128 / 64-row chunks, and raised them at head dim 64 (docs/benchmarks.md,
        "in passes")."""
        for j in tl.range(0, DH // TH, disable_licm=True):
            a1 = _act(_tile(scr, 0, j * TH, DH, BN, TH), ACT)
            if DV >= 128 and PREC == 1:
                dlt = tl.trans(_kept_errors(scr, BN, DH, DV))
                S1j = _tile_t(S1i, j * TH, 0, DV, TH, DV)
                _put_t(W1o, j * TH, 0, DV, bn1 * _tile_t(W1i, j * TH, 0, DV, TH, DV) + gn1 * S1j
                       - _mm(dlt * cn1[None, :], a1, PREC), TH, DV)
                _put_t(S1o, j * TH, 0, DV, hn1 * S1j - _mm(dlt * mn1[None, :], a1, PREC), TH, DV)
            else:
                dlast = _kept_errors(scr, BN, DH, DV)
                S1j = _tile(S1i, j * TH, 0, DV, TH, DV)
                _put(W1o, j * TH, 0, DV, bn1 * _tile(W1i, j * TH, 0, DV, TH, DV) + gn1 * S1j
                     - _mm(tl.trans(a1), cn1[:, None] * dlast, PREC), TH, DV)
                _put(S1o, j * TH, 0, DV, hn1 * S1j - _mm(tl.trans(a1), mn1[:, None] * dlast, PREC), TH, DV)
