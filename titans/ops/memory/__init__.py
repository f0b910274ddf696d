"""The neural long-term memory as a pure function (SPEC §1): ``memory_update`` and ``memory_retrieve``.

Example::

    >>> import torch, titans
    >>> B, T, H, D = 2, 40, 3, 8
    >>> q, k, v = (torch.randn(B, T, H, D) for _ in range(3))
    >>> a, e, th = (torch.rand(B, T, H) for _ in range(3))
    >>> params = (torch.randn(B, H, D, 4 * D) / D**0.5, torch.randn(B, H, 4 * D, D) / (4 * D) ** 0.5)
    >>> o, state = titans.ops.memory_update(q, k, v, a, e, th, params, chunk_size=16)
    >>> o.shape, state.offset
    (torch.Size([2, 40, 3, 8]), 8)
"""

from __future__ import annotations

from .chunk import memory_update_chunk
from .common import MemoryState, check_inputs, memory_forward
from .naive import memory_update_naive
from .triton_op import memory_update_triton

__all__ = ["MemoryState", "memory_update", "memory_retrieve", "memory_update_naive", "memory_update_chunk",
           "memory_update_triton"]

_IMPLS = {"naive": memory_update_naive, "chunk": memory_update_chunk, "triton": memory_update_triton}


def memory_update(q, k, v, alpha, eta, theta, params, momentum=None, *, chunk_size: int = 16,
                  activation: str = "gelu", norm=None, residual: bool = False, impl: str = "chunk",
                  save: bool = False):
    """Write tokens into the memory by gradient descent with momentum and forgetting, and read it after each write.

    Per token t of a chunk that starts at token s (SPEC §1.2)::

        S_t = eta_t S_{t-1} - theta_t grad_W ||M_W(k_t) - v_t||^2 |_{W = W_{s-1}}
        W_t = (1 - alpha_t) W_{t-1} + S_t
        o_t = M_{W_t}(q_t)

    Args:
        q, k (Tensor): ``[B, T, H, Dk]`` queries and keys.
        v (Tensor): ``[B, T, H, Dv]`` values.
        alpha, eta, theta (Tensor): ``[B, T, H]`` or ``[B, T, H, L]`` forget gate in [0, 1], momentum decay in
            [0, 1], inner learning rate >= 0 (one per memory layer with the trailing L).
        params (tuple[Tensor] | MemoryState): a fresh start: L tensors ``[B, H, d_in, d_out]``, the weights before
            the first token (``d_in`` of the first is Dk, ``d_out`` of the last is Dv); or a continuation: the
            state returned by an earlier call, which resumes the chunk in progress.
        momentum (tuple[Tensor], Optional): with a fresh start, the momentum before the first token, like
            ``params``. Default: zeros.
        chunk_size (int): tokens per chunk ``b``; gradients inside a chunk are taken at the weights before it.
            ``1`` is the exact sequential recurrence. Default: 16.
        activation (str): ``"gelu"`` (exact erf), ``"silu"`` or ``"relu"``, between memory layers. Default: gelu.
        norm (tuple[Tensor, Tensor], Optional): LayerNorm ``(weight, bias)``, each ``[H, Dv]``, on the memory's
            output (outer parameters: differentiated through, never updated). Default: None.
        residual (bool): ``M_W(x) = x + ...`` (needs Dk = Dv). Default: False.
        impl (str): ``"naive"`` (per-token reference), ``"chunk"`` (dual form) or ``"triton"`` (the chunk form with a
            fused Triton forward per piece; falls back to ``"chunk"`` with a logged warning). Default: chunk.
        save (bool): with ``impl="chunk"`` and gradients, each chunk's forward keeps its intermediates (the memory
            MLP's activations at the chunk-start weights and at the updated weights) for the backward instead of the
            backward recomputing them: the same numbers, more activation memory, less work in the backward (on CPU
            no reliable speed-up of a training step: ``benchmarks/models.py --sections save``). Ignored by
            ``naive`` (autograd keeps everything) and ``triton`` (its kernel configuration decides). Default: False.

    Returns:
        ``(o, state)``: ``o`` ``[B, T, H, Dv]`` and the :class:`MemoryState` after the last token.
    """
    check_inputs(q, k, v, alpha, eta, theta, params, momentum, chunk_size, activation, norm, residual, impl)
    if not isinstance(save, bool):
        raise TypeError(f"save: expected a bool, got {save!r}")
    extra = {"save": save} if impl == "chunk" else {}
    return _IMPLS[impl](q, k, v, alpha, eta, theta, params, momentum, chunk_size=chunk_size, activation=activation,
                        norm=norm, residual=residual, **extra)


def memory_retrieve(q, params, *, activation: str = "gelu", norm=None, residual: bool = False):
    """``M*(q)``: read the memory without writing (paper Eq. 15 / MAC's Eq. 21).

    Args:
        q (Tensor): ``[B, T, H, Dk]``.
        params (tuple[Tensor] | MemoryState): the weights, L tensors ``[B, H, d_in, d_out]``, or a state
            (its current weights are read).
    Returns:
        ``[B, T, H, Dv]``.
    """
    weights = params.params if isinstance(params, MemoryState) else tuple(params)
    out = memory_forward(q.transpose(1, 2), weights, activation_name=activation, norm=norm, residual=residual)
    return out.transpose(1, 2)
