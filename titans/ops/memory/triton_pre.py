"""The backward's pass P (``KernelConfig.pre``, ``triton_seq_bwd.py``; the default where an H100 ran it faster).

Ten of the products in the backward's main tile loop (pass C) have a head dim as their inner dimension and need
nothing the loop accumulates: the keys and queries through this tile of the first layer (``k W0``, ``q W0``, ``q
S0``, ``k dW0``, ``k dS0``) and the errors and the output's gradient through the second layer transposed (``dlast
W1^T``, ``dz1 W1^T``, ``dz1 S1^T``, ``dlast dW1^T``, ``dlast dS1^T``). In pass C they are ``[chunk, TH]`` products
with few outputs per thread (one per thread at 16-row chunks, 8 warps and 16-wide tiles: half a multiply-add per
shared-memory load; docs/benchmarks.md, "How the products are laid out"). Pass P forms them before the loop in tiles
of ``TP`` hidden columns (``chunk x TP = 4096`` outputs, a 4 x 4 block per thread at 8 warps), with both operands
read from memory in slices of 16 along the inner dimension (``triton_blocks._wide``: only the sum and the slices on
chip), into a per-program scratch that pass C reads tile by tile (``triton_blocks._prod``). At depth 1 the same for
seven products of its two tile loops (``_pre_tiles1``): the output's gradient and the errors through the weights
transposed, and ``-dP`` against the keys and, transposed, the queries. The products' precision is the kernel's
``PPREC`` (``KernelConfig.pre_precision``: ``tf32x3`` puts them on the tensor cores, where the loops' registers do
not allow it; ``_wide``).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # the optional extra is not installed
    HAS_TRITON = False


def pre_scratch(L: int, BH: int, BN: int, DK: int, DH: int, DV: int, device) -> torch.Tensor:
    """Pass P's scratch, per program: at depth 2 the ten ``[BN, DH]`` products it forms (``triton_blocks._prod``'s
    slots) and its two ``[BN, DV]`` operands computed in registers (``dlast``, ``dz1``), read back in slices; at
    depth 1 seven ``[BN, DK]`` products and their operands ``dz``, ``dlast``, ``df`` (``[BN, DV]``), ``-dP`` (``[BN,
    BN]``), ``k``, ``q`` (``[BN, DK]``)."""
    n = 10 * BN * DH + 2 * BN * DV if L == 2 else 9 * BN * DK + 3 * BN * DV + BN * BN
    return torch.empty(BH, n, dtype=torch.float32, device=device)


def pre_width(BN: int, width: int) -> int:
    """Columns per tile of pass P (of the hidden width at depth 2, of the head dim at depth 1): ``BN x TP = 4096``
    outputs, 16 per thread at 8 warps (a 4 x 4 block, two multiply-adds per shared-memory load, against one or half
    in pass C's ``[BN, TH]`` products). Timed only as part of pass P (run 9), not against other widths."""
    return min(width, max(16, 4096 // BN))


if HAS_TRITON:
    from .triton_blocks import _put, _put_square, _wide

    @triton.jit
    def _pre_base(pre_ptr, pid, L: tl.constexpr, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr,
                  DV: tl.constexpr):
        """Program ``pid``'s part of the scratch (:func:`pre_scratch`'s sizes, in the kernel's constants)."""
        per = (L - 1) * (10 * BN * DH + 2 * BN * DV) + (2 - L) * (9 * BN * DK + 3 * BN * DV + BN * BN)
        return pre_ptr + pid * per

    @triton.jit
    def _pre_pass2(pre, dlast, dz1, k_rows, q_rows, mask, W0i, S0i, W1i, S1i, dW0i, dS0i, dW1i, dS1i,
                   BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr, TP: tl.constexpr,
                   PREC: tl.constexpr):
        """Pass P at depth 2, before pass C: ``dlast`` and ``dz1`` parked after the ten slots (read back in slices),
        then the ten ``[BN, DH]`` products in tiles of ``TP`` columns into slots 0-9, in the order pass C reads them
        (:func:`triton_blocks._prod`). ``k_rows``, ``q_rows``: the chunk's token rows (zero where ``~mask``)."""
        dl = pre + 10 * BN * DH
        dz = dl + BN * DV
        _put(dl, 0, 0, DV, dlast, BN, DV)
        _put(dz, 0, 0, DV, dz1, BN, DV)
        tl.debug_barrier()  # read back in slices by other threads
        rn = tl.arange(0, BN)
        ones = rn < BN
        for jp in range(DH // TP):
            c0 = jp * TP
            _put(pre, 0, c0, DH, _wide(k_rows, 1, mask, W0i + c0, DH, 1, DK, BN, TP, PREC), BN, TP)
            _put(pre + BN * DH, 0, c0, DH, _wide(dl + rn * DV, 1, ones, W1i + c0 * DV, 1, DV, DV, BN, TP, PREC), BN,
                 TP)
            _put(pre + 2 * BN * DH, 0, c0, DH, _wide(q_rows, 1, mask, W0i + c0, DH, 1, DK, BN, TP, PREC), BN, TP)
            _put(pre + 3 * BN * DH, 0, c0, DH, _wide(q_rows, 1, mask, S0i + c0, DH, 1, DK, BN, TP, PREC), BN, TP)
            _put(pre + 4 * BN * DH, 0, c0, DH, _wide(dz + rn * DV, 1, ones, W1i + c0 * DV, 1, DV, DV, BN, TP, PREC),
                 BN, TP)
            _put(pre + 5 * BN * DH, 0, c0, DH, _wide(dz + rn * DV, 1, ones, S1i + c0 * DV, 1, DV, DV, BN, TP, PREC),
                 BN, TP)
            _put(pre + 6 * BN * DH, 0, c0, DH, _wide(k_rows, 1, mask, dW0i + c0, DH, 1, DK, BN, TP, PREC), BN, TP)
            _put(pre + 7 * BN * DH, 0, c0, DH, _wide(k_rows, 1, mask, dS0i + c0, DH, 1, DK, BN, TP, PREC), BN, TP)
            _put(pre + 8 * BN * DH, 0, c0, DH, _wide(dl + rn * DV, 1, ones, dW1i + c0 * DV, 1, DV, DV, BN, TP, PREC),
                 BN, TP)
            _put(pre + 9 * BN * DH, 0, c0, DH, _wide(dl + rn * DV, 1, ones, dS1i + c0 * DV, 1, DV, DV, BN, TP, PREC),
                 BN, TP)
        tl.debug_barrier()  # pass C reads what other threads wrote

    @triton.jit
    def _pre_pass1(pre, dz, dlast, ndP, k, q, W0i, S0i, dW0i, dS0i, BN: tl.constexpr, DK: tl.constexpr,
                   DV: tl.constexpr, TP: tl.constexpr, PREC: tl.constexpr):
        """Pass P at depth 1, before the first tile loop: the operands ``dz``, ``dlast`` (``[BN, DV]``), ``-dP``
        (``[BN, BN]``), ``k``, ``q`` (``[BN, DK]``, zero on padded rows) parked after the seven slots, then in tiles of
        ``TP`` input rows slot 0 ``dz W^T``, 1 ``dz S^T``, 2 ``-dP k``, 3 ``dlast dW^T``, 4 ``dlast dS^T``, 6 ``-dP^T
        q`` (5, ``df W^T``, waits for ``df``: :func:`_pre_pass1_late`)."""
        ops = pre + 7 * BN * DK
        nP = ops + 3 * BN * DV
        kq = nP + BN * BN
        _put(ops, 0, 0, DV, dz, BN, DV)
        _put(ops + BN * DV, 0, 0, DV, dlast, BN, DV)
        _put_square(nP, 0, ndP, BN)
        _put(kq, 0, 0, DK, k, BN, DK)
        _put(kq + BN * DK, 0, 0, DK, q, BN, DK)
        tl.debug_barrier()  # read back in slices by other threads
        rn = tl.arange(0, BN)
        ones = rn < BN
        for jp in range(DK // TP):
            c0 = jp * TP
            _put(pre, 0, c0, DK, _wide(ops + rn * DV, 1, ones, W0i + c0 * DV, 1, DV, DV, BN, TP, PREC), BN, TP)
            _put(pre + BN * DK, 0, c0, DK, _wide(ops + rn * DV, 1, ones, S0i + c0 * DV, 1, DV, DV, BN, TP, PREC), BN,
                 TP)
            _put(pre + 2 * BN * DK, 0, c0, DK, _wide(nP + rn * BN, 1, ones, kq + c0, DK, 1, BN, BN, TP, PREC), BN, TP)
            _put(pre + 3 * BN * DK, 0, c0, DK, _wide(ops + BN * DV + rn * DV, 1, ones, dW0i + c0 * DV, 1, DV, DV, BN,
                                                     TP, PREC), BN, TP)
            _put(pre + 4 * BN * DK, 0, c0, DK, _wide(ops + BN * DV + rn * DV, 1, ones, dS0i + c0 * DV, 1, DV, DV, BN,
                                                     TP, PREC), BN, TP)
            _put(pre + 6 * BN * DK, 0, c0, DK, _wide(nP + rn, BN, ones, kq + BN * DK + c0, DK, 1, BN, BN, TP, PREC),
                 BN, TP)
        tl.debug_barrier()  # the loop reads what other threads wrote

    @triton.jit
    def _pre_pass1_late(pre, df, W0i, BN: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, TP: tl.constexpr,
                        PREC: tl.constexpr):
        """Pass P at depth 1, before the second tile loop: ``df`` parked in its operand slot, then slot 5 ``df W^T``."""
        dfp = pre + 7 * BN * DK + 2 * BN * DV
        _put(dfp, 0, 0, DV, df, BN, DV)
        tl.debug_barrier()  # read back in slices by other threads
        rn = tl.arange(0, BN)
        for jp in range(DK // TP):
            c0 = jp * TP
            _put(pre + 5 * BN * DK, 0, c0, DK, _wide(dfp + rn * DV, 1, rn < BN, W0i + c0 * DV, 1, DV, DV, BN, TP,
                                                     PREC), BN, TP)
        tl.debug_barrier()  # the loop reads what other threads wrote
