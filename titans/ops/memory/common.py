"""Pieces shared by every implementation of the memory op: the memory network, its state, input checks.

Ein-notation used in this package:
    B batch, T time, H heads, L memory layers, n tokens of one chunk,
    Dk key/query dim, Dv value dim, d_in/d_out the two dims of one memory layer.
Inside the op tensors are laid out head-major, ``[B, H, T, D]``, so that a token's memory
(``[B, H, d_in, d_out]``) multiplies its rows directly.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

ACTIVATIONS = ("gelu", "silu", "relu")
IMPLS = ("naive", "chunk", "triton")
LN_EPS = 1e-5


class MemoryState(NamedTuple):
    """The memory after the last token of a call, with what exact continuation needs.

    Attributes:
        params: tuple of L tensors ``[B, H, d_in, d_out]``: the weights ``W_t`` after the last token.
        momentum: tuple like ``params``: the momentum ``S_t`` after the last token.
        chunk_params: tuple like ``params``: the weights in force before the chunk in progress (the point
            where that chunk's remaining tokens take their gradients). Same tensors as ``params`` when
            ``offset == 0``.
        offset: tokens of the chunk in progress already consumed, ``0 <= offset < chunk_size``.
        chunk_size: the chunk size this state was produced with; a continuation must use the same.
    """

    params: tuple[torch.Tensor, ...]
    momentum: tuple[torch.Tensor, ...]
    chunk_params: tuple[torch.Tensor, ...]
    offset: int
    chunk_size: int

    def detach(self) -> MemoryState:
        """The same state cut from the autograd graph (truncated backpropagation through time)."""
        cut = lambda ws: tuple(w.detach() for w in ws)  # noqa: E731
        return MemoryState(cut(self.params), cut(self.momentum), cut(self.chunk_params), self.offset, self.chunk_size)


def activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """sigma between memory layers; gelu is the exact erf form."""
    if name == "gelu":
        return F.gelu(x)
    if name == "silu":
        return F.silu(x)
    return F.relu(x)


def activation_backward(g: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """``g * sigma'(x)`` through ATen's fused backward kernels (exact, and differentiable, so autograd can take the
    outer, second-order gradient through them), except SiLU's where a gradient is wanted: ATen has no derivative
    for ``silu_backward``, so autograd gets ``sigma'`` written out instead."""
    if name == "gelu":
        return torch.ops.aten.gelu_backward(g, x)
    if name == "silu":
        if torch.is_grad_enabled() and (g.requires_grad or x.requires_grad):
            s = torch.sigmoid(x)
            return g * s * (1 + x * (1 - s))
        return torch.ops.aten.silu_backward(g, x)
    return torch.ops.aten.threshold_backward(g, x, 0)


def activation_grad2(x: torch.Tensor, name: str) -> torch.Tensor:
    """sigma''(x), for the second-order term of the inner gradient in the hand-written backward."""
    if name == "gelu":
        return torch.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi)) * (2.0 - x * x)
    if name == "silu":
        s = torch.sigmoid(x)
        return s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))
    return torch.zeros_like(x)


def layer_norm(f: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """LayerNorm over the last dim with per-head affine parameters.

    Args:
        f: ``[B, H, n, Dv]``. weight, bias: ``[H, Dv]``.
    Returns:
        ``(y, xhat, rstd)``: the output ``[B, H, n, Dv]``, the normalized input and ``1/std`` ``[B, H, n, 1]``,
        kept for the analytic backward.
    """
    mu = f.mean(-1, keepdim=True)
    xc = f - mu
    rstd = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + LN_EPS)
    xhat = xc * rstd
    return xhat * weight[:, None, :] + bias[:, None, :], xhat, rstd


def layer_norm_backward(g: torch.Tensor, xhat: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Gradient of ``sum(g * LN(f))`` with respect to ``f``, given ``g = dloss/dLN(f)``; all ``[B, H, n, Dv]``."""
    gh = g * weight[:, None, :]
    return rstd * (gh - gh.mean(-1, keepdim=True) - xhat * (gh * xhat).mean(-1, keepdim=True))


def mlp_activations(x: torch.Tensor, params, activation_name: str):
    """Rows ``x [B, H, n, Dk]`` through the memory MLP ``params`` (before any norm or residual), keeping what its
    inner gradient needs: ``(a, zs)``, each layer's input ``a_l`` and pre-activation ``z_l`` (lists of L tensors
    ``[B, H, n, d]``; ``zs[-1]`` is the MLP's output)."""
    a, zs, h = [x], [], x
    for l, w in enumerate(params):
        zs.append(h @ w)
        if l < len(params) - 1:
            h = activation(zs[-1], activation_name)
            a.append(h)
    return a, zs


def memory_forward(x: torch.Tensor, params, *, activation_name: str = "gelu", norm=None, residual: bool = False):
    """``M_W(x)``: the memory network applied to rows of ``x`` (no weight update).

    Args:
        x: ``[B, H, n, Dk]``. params: tuple of L tensors ``[B, H, d_in, d_out]``.
        norm: None or ``(weight, bias)`` each ``[H, Dv]``. residual: add ``x`` to the output (needs Dk = Dv).
    Returns:
        ``[B, H, n, Dv]``.
    """
    h = x
    for i, w in enumerate(params):
        h = h @ w
        if i < len(params) - 1:
            h = activation(h, activation_name)
    if norm is not None:  # ATen's fused LayerNorm: layer_norm's numbers in two operator calls (reads of one token)
        xhat = torch.native_layer_norm(h, h.shape[-1:], None, None, LN_EPS)[0]
        h = torch.addcmul(norm[1][:, None, :], xhat, norm[0][:, None, :])
    return x + h if residual else h


def gates_per_layer(g: torch.Tensor, n_layers: int, name: str) -> torch.Tensor:
    """``[B, T, H]`` or ``[B, T, H, L]`` gates -> ``[B, T, H, L]`` (a view; one gate shared by all layers expands)."""
    if g.dim() == 3:
        return g.unsqueeze(-1).expand(*g.shape, n_layers)
    if g.shape[-1] not in (1, n_layers):
        raise ValueError(f"{name}: last dim must be 1 or the number of memory layers {n_layers}, "
                         f"got shape {tuple(g.shape)}")
    return g.expand(*g.shape[:-1], n_layers)


def check_inputs(q, k, v, alpha, eta, theta, params, momentum, chunk_size, activation_name, norm, residual, impl):
    """Validate everything before any work; every error names the argument and the value."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name}: expected a tensor [B, T, H, D], got {getattr(t, 'shape', type(t))}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating dtype, got {t.dtype}")
    B, T, H, Dk = k.shape
    if q.shape != k.shape:
        raise ValueError(f"q: shape {tuple(q.shape)} must equal k's {tuple(k.shape)}")
    if v.shape[:3] != (B, T, H):
        raise ValueError(f"v: shape {tuple(v.shape)} must share [B, T, H] = {(B, T, H)} with k")
    Dv = v.shape[-1]
    dtype = k.dtype
    for name, t in (("q", q), ("v", v)):
        if t.dtype != dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from k's {dtype}")
    first = params.params[0] if isinstance(params, MemoryState) else next(iter(params), None)
    if impl == "triton" and dtype in (torch.float16, torch.bfloat16) and getattr(first, "dtype", None) == torch.float32:
        dtype = torch.float32  # half-precision tokens, float32 memory, gates and state (the kernel accumulates in fp32)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an int >= 1, got {chunk_size!r}")
    if activation_name not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation_name!r}")
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")

    if isinstance(params, MemoryState):
        if momentum is not None:
            raise ValueError("momentum: must be None when params is a MemoryState (the state carries it)")
        if params.chunk_size != chunk_size:
            raise ValueError(
                f"chunk_size: {chunk_size} differs from the state's chunk_size {params.chunk_size}; "
                "a continuation must keep the chunking it started with"
            )
        weights = params.params
    else:
        weights = tuple(params)
    L = len(weights)
    if L < 1:
        raise ValueError("params: expected at least one memory layer")
    d_prev = Dk
    for i, w in enumerate(weights):
        if w.dim() != 4 or w.shape[:2] != (B, H) or w.shape[2] != d_prev:
            raise ValueError(f"params[{i}]: expected [B={B}, H={H}, d_in={d_prev}, d_out], got {tuple(w.shape)}")
        if w.dtype != dtype:
            raise TypeError(f"params[{i}]: dtype {w.dtype} differs from k's {k.dtype}")
        d_prev = w.shape[3]
    if d_prev != Dv:
        raise ValueError(f"params[{L - 1}]: last layer outputs {d_prev} features but v has Dv={Dv}")
    if momentum is not None:
        if len(tuple(momentum)) != L:
            raise ValueError(f"momentum: expected {L} tensors like params, got {len(tuple(momentum))}")
        for i, (s, w) in enumerate(zip(momentum, weights)):
            if s.shape != w.shape or s.dtype != dtype:
                raise ValueError(f"momentum[{i}]: expected shape {tuple(w.shape)} {dtype}, "
                                 f"got {tuple(s.shape)} {s.dtype}")

    for name, g in (("alpha", alpha), ("eta", eta), ("theta", theta)):
        if not isinstance(g, torch.Tensor) or g.dim() not in (3, 4) or g.shape[:3] != (B, T, H):
            raise ValueError(f"{name}: expected [B, T, H] or [B, T, H, L] with [B, T, H] = {(B, T, H)}, "
                             f"got {getattr(g, 'shape', type(g))}")
        if g.dim() == 4 and g.shape[-1] not in (1, L):
            raise ValueError(f"{name}: last dim must be 1 or L={L}, got {tuple(g.shape)}")
        if g.dtype != dtype:
            raise TypeError(f"{name}: dtype {g.dtype} differs from the memory's {dtype}")

    if norm is not None:
        if len(norm) != 2:
            raise ValueError("norm: expected None or a (weight, bias) pair")
        for name, t in zip(("norm weight", "norm bias"), norm):
            if t.shape != (H, Dv):
                raise ValueError(f"{name}: expected shape {(H, Dv)}, got {tuple(t.shape)}")
    if residual and Dk != Dv:
        raise ValueError(f"residual: needs Dk == Dv, got Dk={Dk}, Dv={Dv}")
    return L
