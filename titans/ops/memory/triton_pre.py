"""The backward's pass P (``KernelConfig.pre``, opt-in; ``triton_seq_bwd.py``).

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
transposed, and ``-dP`` against the keys and, transposed, the queries.
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
    in pass C's ``[BN, TH]`` products). Not timed on a GPU yet."""
    return min(width, max(16, 4096 // BN))


if HAS_TRITON:
    from .triton_blocks import _put, _wide

    @triton.jit
    def _pre_tiles(pre, jp, k_rows, q_rows, mask, W0i, S0i, W1i, S1i, dW0i, dS0i, dW1i, dS1i, BN: tl.constexpr,
                   DK: tl.constexpr, DH: tl.constexpr, DV: tl.constexpr, TP: tl.constexpr, PREC: tl.constexpr):
        """Pass P, wide tile ``jp`` (``TP`` hidden columns): the ten ``[BN, TP]`` products of pass C whose inner
        dimension is a head dim, into slots 0-9 of the scratch ``pre``, in the order pass C reads them
        (:func:`triton_blocks._prod`); ``dlast`` and ``dz1`` are read from its slots 10 and 11 (``[BN, DV]``)."""
        rn = tl.arange(0, BN)
        ones = rn < BN
        dl_rows = pre + 10 * BN * DH + rn * DV
        dz_rows = pre + 10 * BN * DH + BN * DV + rn * DV
        c0 = jp * TP
        _put(pre, 0, c0, DH, _wide(k_rows, 1, mask, W0i + c0, DH, 1, DK, BN, TP, PREC), BN, TP)
        _put(pre + BN * DH, 0, c0, DH, _wide(dl_rows, 1, ones, W1i + c0 * DV, 1, DV, DV, BN, TP, PREC), BN, TP)
        _put(pre + 2 * BN * DH, 0, c0, DH, _wide(q_rows, 1, mask, W0i + c0, DH, 1, DK, BN, TP, PREC), BN, TP)
        _put(pre + 3 * BN * DH, 0, c0, DH, _wide(q_rows, 1, mask, S0i + c0, DH, 1, DK, BN, TP, PREC), BN, TP)
        _put(pre + 4 * BN * DH, 0, c0, DH, _wide(dz_rows, 1, ones, W1i + c0 * DV, 1, DV, DV, BN, TP, PREC), BN, TP)
        _put(pre + 5 * BN * DH, 0, c0, DH, _wide(dz_rows, 1, ones, S1i + c0 * DV, 1, DV, DV, BN, TP, PREC), BN, TP)
        _put(pre + 6 * BN * DH, 0, c0, DH, _wide(k_rows, 1, mask, dW0i + c0, DH, 1, DK, BN, TP, PREC), BN, TP)
        _put(pre + 7 * BN * DH, 0, c0, DH, _wide(k_rows, 1, mask, dS0i + c0, DH, 1, DK, BN, TP, PREC), BN, TP)
        _put(pre + 8 * BN * DH, 0, c0, DH, _wide(dl_rows, 1, ones, dW1i + c0 * DV, 1, DV, DV, BN, TP, PREC), BN, TP)
        _put(pre + 9 * BN * DH, 0, c0, DH, _wide(dl_rows, 1, ones, dS1i + c0 * DV, 1, DV, DV, BN, TP, PREC), BN, TP)

    @triton.jit
    def _pre_tiles1(pre, jp, ops, LATE: tl.constexpr, W0i, S0i, dW0i, dS0i, BN: tl.constexpr, DK: tl.constexpr,
                    DV: tl.constexpr, TP: tl.constexpr, PREC: tl.constexpr):
        """Depth 1's pass P, wide tile ``jp`` (``TP`` input rows): the ``[BN, TP]`` products of the backward's two
        tile loops whose inner dimension is a head dim or the chunk, into slots of ``pre`` (``[7, BN, DK]``): before
        the first loop 0 ``dz W^T``, 1 ``dz S^T``, 2 ``-dP k``, 3 ``dlast dW^T``, 4 ``dlast dS^T``, 6 ``-dP^T q``;
        before the second (``LATE``, once ``df`` is known) 5 ``df W^T``. Operands from ``ops``: ``dz``, ``dlast``,
        ``df`` (``[BN, DV]`` each), ``-dP`` (``[BN, BN]``), ``k``, ``q`` (``[BN, DK]``, zero on padded rows)."""
        rn = tl.arange(0, BN)
        ones = rn < BN
        c0 = jp * TP
        nP = ops + 3 * BN * DV
        kq = nP + BN * BN
        if LATE:
            _put(pre + 5 * BN * DK, 0, c0, DK, _wide(ops + 2 * BN * DV + rn * DV, 1, ones, W0i + c0 * DV, 1, DV, DV,
                                                     BN, TP, PREC), BN, TP)
        else:
            dz_rows = ops + rn * DV
            dl_rows = ops + BN * DV + rn * DV
            _put(pre, 0, c0, DK, _wide(dz_rows, 1, ones, W0i + c0 * DV, 1, DV, DV, BN, TP, PREC), BN, TP)
            _put(pre + BN * DK, 0, c0, DK, _wide(dz_rows, 1, ones, S0i + c0 * DV, 1, DV, DV, BN, TP, PREC), BN, TP)
            _put(pre + 2 * BN * DK, 0, c0, DK, _wide(nP + rn * BN, 1, ones, kq + c0, DK, 1, BN, BN, TP, PREC), BN,
                 TP)
            _put(pre + 3 * BN * DK, 0, c0, DK, _wide(dl_rows, 1, ones, dW0i + c0 * DV, 1, DV, DV, BN, TP, PREC), BN,
                 TP)
            _put(pre + 4 * BN * DK, 0, c0, DK, _wide(dl_rows, 1, ones, dS0i + c0 * DV, 1, DV, DV, BN, TP, PREC), BN,
                 TP)
            _put(pre + 6 * BN * DK, 0, c0, DK, _wide(nP + rn, BN, ones, kq + BN * DK + c0, DK, 1, BN, BN, TP, PREC),
                 BN, TP)
