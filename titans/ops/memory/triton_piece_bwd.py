"""Triton kernel for the weight-sized work of a piece's backward (``piece.weight_grads``), for the calls in pieces of
``triton_piece.py`` (``KernelConfig.wgrad``).

Why: in ``piece.piece_backward`` each layer reads its weights ``W``, momentum ``S`` and the incoming gradients of the
piece's end weights and momentum ``dW'``, ``dS'`` (``[B, H, d_in, d_out]`` each) in several cuBLAS products and
about twenty elementwise passes and sums (the gradients' end terms ``beta_n dW'``, ..., and ``<dW', W>``, ...), each a
pass over the weights; at depth 2 / head dim 128 a good part of the backward's elementwise time (run 17's profile,
docs/benchmarks.md). Here one launch per layer reads each of the four once and writes ``dW``, ``dS`` once: a
program per (batch row, head) and block of ``TR`` rows of the weights walks their columns in tiles of ``TC``, with

    dW[r, c] = (beta X)[:, r]^T dz[:, c] + beta_n dW'[r, c]
    dS[r, c] = (gamma X)[:, r]^T dz[:, c] + gamma_n dW'[r, c] + h_n dS'[r, c]
    YW[:, r] += dz[:, c] W[r, c]^T,   YS[:, r] += dz[:, c] S[r, c]^T

and its block's share of ``<dW', W>``, ``<dW', S>``, ``<dS', S>`` (summed over blocks afterwards, in a fixed order).
Rows of a piece past ``n`` are zero (masked loads, zero-padded ``beta``, ``gamma``).
"""

from __future__ import annotations

import dataclasses

import torch

from .triton_blocks import HAS_TRITON
from .triton_config import KernelConfig, launch
from .triton_piece import _rowmajor
from .triton_seq import block_rows

if HAS_TRITON:
    import triton
    import triton.language as tl

    from .triton_blocks import _mm

    @triton.jit
    def _wgrad_kernel(x_ptr, sx_b, sx_h, sx_t, dz_ptr, sd_b, sd_h, sd_t, bg_ptr, W_ptr, sw_b, sw_h, S_ptr, ss_b,
                      ss_h, dWp_ptr, sdw_b, sdw_h, dSp_ptr, sds_b, sds_h, scal_ptr, dW_ptr, dS_ptr, yw_ptr, ys_ptr,
                      part_ptr, n, H, L: tl.constexpr, BN: tl.constexpr, DK: tl.constexpr, DH: tl.constexpr,
                      DV: tl.constexpr, TH: tl.constexpr, PREC: tl.constexpr, DI: tl.constexpr, DO: tl.constexpr):
        TR: tl.constexpr = min(TH, DI)
        TC: tl.constexpr = min(TH, DO)
        g = tl.program_id(0).to(tl.int64)
        pid, r = g // (DI // TR), g % (DI // TR)
        b, h = pid // H, pid % H
        rn = tl.arange(0, BN)
        rr = r * TR + tl.arange(0, TR)
        rc = tl.arange(0, TC)
        mask = rn < n
        X = tl.load(x_ptr + b * sx_b + h * sx_h + rn[:, None] * sx_t + rr[None, :], mask=mask[:, None],
                    other=0.0).to(tl.float32)
        bX = tl.load(bg_ptr + pid * 2 * BN + rn)[:, None] * X  # beta, gamma [BH, 2, BN], zero past n
        gX = tl.load(bg_ptr + pid * 2 * BN + BN + rn)[:, None] * X
        bn, gn, hn = tl.load(scal_ptr + pid * 3), tl.load(scal_ptr + pid * 3 + 1), tl.load(scal_ptr + pid * 3 + 2)
        yw = tl.zeros([BN, TR], dtype=tl.float32)
        ys = tl.zeros([BN, TR], dtype=tl.float32)
        s_ww = tl.zeros([TR], dtype=tl.float32)  # <dW', W>, <dW', S>, <dS', S> on this block, by row
        s_ws = tl.zeros([TR], dtype=tl.float32)
        s_ss = tl.zeros([TR], dtype=tl.float32)
        for c in range(DO // TC):
            cols = c * TC + rc
            dzc = tl.load(dz_ptr + b * sd_b + h * sd_h + rn[:, None] * sd_t + cols[None, :], mask=mask[:, None],
                          other=0.0).to(tl.float32)
            tile = rr[:, None] * DO + cols[None, :]
            Wc = tl.load(W_ptr + b * sw_b + h * sw_h + tile)
            Sc = tl.load(S_ptr + b * ss_b + h * ss_h + tile)
            dWc = tl.load(dWp_ptr + b * sdw_b + h * sdw_h + tile)
            dSc = tl.load(dSp_ptr + b * sds_b + h * sds_h + tile)
            out = pid * DI * DO + tile
            tl.store(dW_ptr + out, _mm(tl.trans(bX), dzc, PREC) + bn * dWc)
            tl.store(dS_ptr + out, _mm(tl.trans(gX), dzc, PREC) + gn * dWc + hn * dSc)
            yw += _mm(dzc, tl.trans(Wc), PREC)
            ys += _mm(dzc, tl.trans(Sc), PREC)
            s_ww += tl.sum(dWc * Wc, 1)
            s_ws += tl.sum(dWc * Sc, 1)
            s_ss += tl.sum(dSc * Sc, 1)
        rows = pid * BN * DI + rn[:, None] * DI + rr[None, :]
        tl.store(yw_ptr + rows, yw)
        tl.store(ys_ptr + rows, ys)
        part = part_ptr + (pid * DI + r) * 3  # [BH, DI, 3], zero where a head has fewer blocks than rows
        tl.store(part, tl.sum(s_ww, 0))
        tl.store(part + 1, tl.sum(s_ws, 0))
        tl.store(part + 2, tl.sum(s_ss, 0))


def weight_grads_triton(X, dz, beta, gamma, W, S, dWp, dSp, beta_n, gamma_n, h_n, *, shape: tuple,
                        cfg: KernelConfig):
    """``piece.weight_grads`` in one launch (float32): same arguments and returns; ``shape``: the forward's kernel
    shape ``(L, BN, DK, DH, DV)`` of the call in pieces, ``cfg`` its configuration (``TH``: the tiles of rows and
    columns; warps; the products' precision is ``wgrad_precision``: compiled offline at head dim 128 / 64-row chunks,
    4 warps, the ieee kernel spills nothing and the tf32x3 one 1,138 spill instructions a launch at layer 0)."""
    cfg = dataclasses.replace(cfg, precision=cfg.wgrad_precision)
    B, H, n, DI = X.shape
    DO = dz.shape[-1]
    BH, BN = B * H, block_rows(n)
    shape = (shape[0], BN, *shape[2:])  # a last partial piece pads to fewer rows
    f32 = dict(dtype=torch.float32, device=X.device)
    X = X if X.stride(-1) == 1 else X.contiguous()
    dz = (dz if dz.stride(-1) == 1 else dz.contiguous()).float()
    bg = torch.zeros(BH, 2, BN, **f32)
    bg[:, 0, :n], bg[:, 1, :n] = beta.reshape(BH, n), gamma.reshape(BH, n)
    scal = torch.stack([beta_n, gamma_n, h_n], -1).reshape(BH, 3).float().contiguous()
    W, S, dWp, dSp = (_rowmajor(w.float()) for w in (W, S, dWp, dSp))
    dW, dS = torch.empty(B, H, DI, DO, **f32), torch.empty(B, H, DI, DO, **f32)
    yw, ys = torch.empty(BH, BN, DI, **f32), torch.empty(BH, BN, DI, **f32)
    part = torch.zeros(BH, DI, 3, **f32)  # a row per (head, block of rows), summed in a fixed order

    def strided(t, k):
        return (t, *t.stride()[:k])

    key = dict(zip(("L", "BN", "DK", "DH", "DV"), shape))
    args = (*strided(X, 3), *strided(dz, 3), bg, *strided(W, 2), *strided(S, 2), *strided(dWp, 2),
            *strided(dSp, 2), scal, dW, dS, yw, ys, part, n, H)
    launch(_wgrad_kernel, lambda th: (BH * (DI // min(th, DI)),), args, backward=False, cfg=cfg,
           part=f"wgrad{DI}x{DO}", DI=DI, DO=DO, **key)
    sums = part.sum(1).view(B, H, 3)
    rows = lambda t: t.view(B, H, BN, DI)[:, :, :n]  # noqa: E731
    return rows(yw), rows(ys), dW, dS, sums[..., 0], sums[..., 1], sums[..., 2]
