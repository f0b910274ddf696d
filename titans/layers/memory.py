"""The neural long-term memory as a token mixer (SPEC §2, paper §3 / V2 §2-3).

    q, k, v = conv(SiLU(x W_Q)), conv(SiLU(x W_K)), conv(SiLU(x W_V))     split into heads, q and k l2-normalized
    theta_t = theta_max * sigmoid(x_t w_theta), eta_t = sigmoid(x_t w_eta), alpha_t = sigmoid(x_t w_alpha)
    o = memory_update(q, k, v, alpha, eta, theta, W_0)                      the memory learns while it reads
    y = W_O (RMSNorm_head(o) * SiLU(x W_G))

Example::

    >>> import torch
    >>> from titans.layers import NeuralMemory
    >>> mem = NeuralMemory(d_model=64, n_heads=4)
    >>> x = torch.randn(2, 50, 64)
    >>> y, state = mem(x)                                 # [2, 50, 64]
    >>> y2, state = mem(torch.randn(2, 1, 64), state)     # stream one more token
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.memory import MemoryState, memory_retrieve, memory_update
from .conv import CausalDepthwiseConv1d

# Initial gate values (gate projections start near zero, so the biases set them): an inner learning rate of
# 0.1 * theta_max, a momentum decay of 0.8 and a forget rate of 0.001 per token. Chosen for a stable start:
# with unit-norm keys the linear case is a delta rule with step 2*theta, far below its stability limit of 2. The
# forget rate was 0.01 until measured (benchmarks/memory_scale.py, docs/results.md): forgetting scales every weight
# by 1 - alpha per token and the first writes cannot keep up, so a depth-2 memory's pre-LN output shrinks 40x in
# 256 tokens; the LN hides that from the forward pass, not from the backward, whose norm then grows geometrically
# with the context (4e3 at 512 tokens, 1.5e10 at 2K, at initialization), while at 0.001 it stays within 360-420 up
# to 8K. At 0.01 MAC diverged on DNA and the LMM could not learn S-NIAH. The committed studies keep 0.01
# (STUDY_ALPHA_INIT in titans.models.config) so that their commands reproduce their tables.
THETA_INIT, ETA_INIT, ALPHA_INIT = 0.1, 0.8, 0.001


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class NeuralMemoryState(NamedTuple):
    """Streaming state of :class:`NeuralMemory`: the memory, the conv cache ``[B, K-1, 3*H*D]`` (or None), and the
    gates of the chunk in progress (only with ``chunk_gates``; three ``[B, H, Lg]`` tensors, else None)."""

    memory: MemoryState
    conv: torch.Tensor | None
    gates: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None

    def detach(self) -> NeuralMemoryState:
        return NeuralMemoryState(self.memory.detach(), None if self.conv is None else self.conv.detach(),
                                 None if self.gates is None else tuple(g.detach() for g in self.gates))


class NeuralMemory(nn.Module):
    """Titans' long-term memory layer (LMM).

    Args:
        d_model (int): model width.
        n_heads (int): memory heads; each has its own memory network.
        head_dim (int, Optional): Dk = Dv per head. Default: ``d_model // n_heads``.
        depth (int): memory layers L (1 = linear memory). Default: 2.
        expansion (int): hidden width of a deep memory, in multiples of head_dim. Default: 4.
        activation (str): gelu | silu | relu between memory layers. Default: gelu.
        residual (bool): ``M(x) = x + ...``. Default: True (V2).
        layer_norm (bool): LayerNorm on the memory's output (per head, learnable, outer). Default: True (V2).
        chunk_size (int): tokens per inner mini-batch b. Default: 16.
        conv (bool): causal depthwise conv (kernel ``conv_kernel``) after q/k/v. Default: True.
        momentum (bool): False sets eta = 0 (ablation "w/o momentum"). Default: True.
        forgetting (bool): False sets alpha = 0 (ablation "w/o weight decay"). Default: True.
        per_layer_gates (bool, Optional): one theta/eta/alpha per memory layer (V2's "layer-wise parameters").
            Default: ``depth > 1``.
        chunk_gates (bool): gates constant within a chunk, taken from the chunk's first token (the paper's
            "parameters as functions of chunks"; from the first token so that the layer stays causal). Default: False.
        theta_max (float): ceiling of the inner learning rate (hidden memory layers: divided by their fan-in).
            Default: 0.1 (1.0 diverged when training MAC: keys of attention outputs are alike within a chunk, so
            their gradients, all taken at the chunk-start weights, add up).
        alpha_init (float): the forget gate's value at initialization, per token. Default: 0.001.
        impl (str): memory op implementation, naive | chunk | triton (falls back to chunk where the kernel
            cannot run). Default: chunk.
        save_intermediates (bool): with ``impl="chunk"``, keep each chunk's intermediates for the backward instead
            of recomputing them (``memory_update``'s ``save``): the same numbers, more activation memory, and on
            CPU no reliable speed-up (``docs/benchmarks.md``). Default: False.
    Shapes:
        ``x``: ``[B, T, d_model]`` -> ``y``: ``[B, T, d_model]``, plus the :class:`NeuralMemoryState` to continue from.
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int | None = None, *, depth: int = 2, expansion: int = 4,
                 activation: str = "gelu", residual: bool = True, layer_norm: bool = True, chunk_size: int = 16,
                 conv: bool = True, conv_kernel: int = 4, momentum: bool = True, forgetting: bool = True,
                 per_layer_gates: bool | None = None, chunk_gates: bool = False, theta_max: float = 0.1,
                 alpha_init: float = ALPHA_INIT, impl: str = "chunk", save_intermediates: bool = False):
        super().__init__()
        for name, val in (("d_model", d_model), ("n_heads", n_heads), ("depth", depth), ("expansion", expansion),
                          ("chunk_size", chunk_size), ("conv_kernel", conv_kernel)):
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"NeuralMemory: {name} must be a positive int, got {val!r}")
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"NeuralMemory: d_model={d_model} is not divisible by n_heads={n_heads}")
            head_dim = d_model // n_heads
        if activation not in ("gelu", "silu", "relu"):
            raise ValueError(f"NeuralMemory: activation must be gelu|silu|relu, got {activation!r}")
        if impl not in ("naive", "chunk", "triton"):
            raise ValueError(f"NeuralMemory: impl must be naive|chunk|triton, got {impl!r}")
        if not isinstance(save_intermediates, bool):
            raise TypeError(f"NeuralMemory: save_intermediates must be a bool, got {save_intermediates!r}")
        if theta_max <= 0:
            raise ValueError(f"NeuralMemory: theta_max must be > 0, got {theta_max!r}")
        if not 0 < alpha_init < 1:
            raise ValueError(f"NeuralMemory: alpha_init must be in (0, 1), got {alpha_init!r}")
        self.alpha_init, self.save_intermediates = alpha_init, save_intermediates
        self.n_heads, self.head_dim, self.depth = n_heads, head_dim, depth
        self.activation, self.residual, self.chunk_size, self.impl = activation, residual, chunk_size, impl
        self.momentum, self.forgetting, self.chunk_gates, self.theta_max = momentum, forgetting, chunk_gates, theta_max
        self.n_gates = depth if (per_layer_gates if per_layer_gates is not None else depth > 1) else 1
        inner = n_heads * head_dim

        self.qkv = nn.Linear(d_model, 3 * inner, bias=False)
        self.conv = CausalDepthwiseConv1d(3 * inner, conv_kernel) if conv else None
        # One projection for the three gates: [theta | eta | alpha], each n_heads * n_gates wide.
        self.gates = nn.Linear(d_model, 3 * n_heads * self.n_gates)
        self.out_norm = nn.RMSNorm(head_dim, eps=1e-6)
        self.gate_proj = nn.Linear(d_model, inner, bias=False)
        self.out_proj = nn.Linear(inner, d_model, bias=False)

        dims = [head_dim] + [expansion * head_dim] * (depth - 1) + [head_dim]
        # W_0: keys are unit vectors, so the first layer gets unit-variance entries (its outputs are then O(1));
        # later layers the usual 1/sqrt(fan_in). A small first layer would make the memory's output tiny and its
        # LayerNorm's 1/std huge: an ill-conditioned inner problem.
        self.init_params = nn.ParameterList(
            [nn.Parameter(torch.randn(n_heads, dims[i], dims[i + 1]) / (1.0 if i == 0 else math.sqrt(dims[i])))
             for i in range(depth)])
        # Inner learning-rate scale per memory layer: the curvature of ||M(k) - v||^2 in W_l grows with the squared
        # norm of the layer's input, 1 for the unit-norm keys and about fan_in for a hidden layer (O(1) entries), so
        # theta of a hidden layer is divided by its fan-in (as TTT divides its inner rate by the width). One
        # theta_max then suits every width.
        self.register_buffer("theta_scale", torch.tensor([1.0] + [1.0 / d for d in dims[1:-1]]), persistent=False)
        if layer_norm:
            self.mem_norm_weight = nn.Parameter(torch.ones(n_heads, head_dim))
            self.mem_norm_bias = nn.Parameter(torch.zeros(n_heads, head_dim))
        else:
            self.mem_norm_weight = self.mem_norm_bias = None
        self.reset_gates()

    def reset_gates(self):
        nn.init.normal_(self.gates.weight, std=0.02)
        g = self.n_heads * self.n_gates
        with torch.no_grad():
            self.gates.bias[:g] = _logit(THETA_INIT)
            self.gates.bias[g:2 * g] = _logit(ETA_INIT)
            self.gates.bias[2 * g:] = _logit(self.alpha_init)

    def initial_state(self, batch_size: int) -> MemoryState:
        """The learnable ``W_0`` broadcast over the batch (views, no copies), zero momentum."""
        params = tuple(w.unsqueeze(0).expand(batch_size, *w.shape) for w in self.init_params)
        zeros = tuple(torch.zeros_like(p) for p in params)
        return MemoryState(params, zeros, params, 0, self.chunk_size)

    def read(self, q: torch.Tensor, memory: MemoryState) -> torch.Tensor:
        """``M*(q)`` at ``memory``'s current weights, no write: ``q [B, T, H, D] -> [B, T, H, D]``."""
        norm = None if self.mem_norm_weight is None else (self.mem_norm_weight, self.mem_norm_bias)
        return memory_retrieve(q, memory, activation=self.activation, norm=norm, residual=self.residual)

    def _gates(self, x, state):
        """theta, eta, alpha: each ``[B, T, H, Lg]``, and the chunk-gate cache to carry."""
        B, T, _ = x.shape
        raw = self.gates(x).view(B, T, 3, self.n_heads, self.n_gates)
        cache = None
        if self.chunk_gates:
            offset = state.memory.offset if state is not None else 0
            t = torch.arange(T, device=x.device)
            start = t - (offset + t) % self.chunk_size  # the call-local index of each token's chunk start
            picked = raw[:, start.clamp_min(0)]
            if state is not None and state.gates is not None and offset > 0:
                prev = torch.stack(state.gates, dim=1)[:, None]  # [B, 1, 3, H, Lg]
                picked = torch.where((start < 0).view(1, T, 1, 1, 1), prev, picked)
            raw = picked
            if T > 0:  # copies: views of raw [B, T, ...] would keep every token's gates alive
                cache = tuple(g.clone() for g in raw[:, -1].unbind(1))
            elif state is not None:
                cache = state.gates
        theta = self.theta_max * torch.sigmoid(raw[:, :, 0]) * self.theta_scale.to(raw.dtype)  # [B, T, H, L]
        eta = torch.sigmoid(raw[:, :, 1]) if self.momentum else torch.zeros_like(raw[:, :, 1])
        alpha = torch.sigmoid(raw[:, :, 2]) if self.forgetting else torch.zeros_like(raw[:, :, 2])
        return theta, eta, alpha, cache

    def forward(self, x: torch.Tensor, state: NeuralMemoryState | None = None):
        B, T, _ = x.shape
        H, D = self.n_heads, self.head_dim
        qkv = F.silu(self.qkv(x))
        conv_cache = None
        if self.conv is not None:
            qkv, conv_cache = self.conv(qkv, state.conv if state is not None else None)
        q, k, v = qkv.view(B, T, 3, H, D).unbind(2)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        theta, eta, alpha, gate_cache = self._gates(x, state)
        mem = state.memory if state is not None else self.initial_state(B)
        norm = None if self.mem_norm_weight is None else (self.mem_norm_weight, self.mem_norm_bias)
        o, mem = memory_update(q, k, v, alpha, eta, theta, mem, chunk_size=self.chunk_size, activation=self.activation,
                               norm=norm, residual=self.residual, impl=self.impl, save=self.save_intermediates)
        y = self.out_norm(o).reshape(B, T, H * D) * F.silu(self.gate_proj(x))
        return self.out_proj(y), NeuralMemoryState(mem, conv_cache, gate_cache)
