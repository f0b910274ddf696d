"""Forecasters: the neural-memory forecaster and the baselines, all ``forward(x [B, L, C]) -> [B, H, C]``.

- ``lmm``: our memory forecaster. Reversible instance normalization (RevIN), channel-independent patching (patch 16,
  stride 8), a stack of pre-norm blocks whose token mixer is the neural memory (``titans.layers.NeuralMemory``,
  causal over the patch sequence) followed by a SwiGLU MLP, then a linear head from the flattened patches to the
  horizon. What follows Simba (Patro & Agneeswaran 2024): RevIN, patching, a sequence-mixer block stack with a
  flatten head; the paper replaces Simba's Mamba with the memory, and so do we. Our choice: channel independence
  (Simba also mixes channels with a second Mamba; left out: the sets here have 1-8 channels).
- ``dlinear`` (Zeng et al. 2023): moving-average trend/seasonal decomposition, one linear map each.
- ``patchtst`` (Nie et al. 2023, small): RevIN, patching, a Transformer encoder over patches, flatten head.
- ``transformer``: a Transformer encoder over time steps (all channels embedded together), flatten head.
- ``seasonal_naive``: repeats the last period of the lookback (no parameters): the floor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import NeuralMemory, SwiGLU
from ..models import STUDY_ALPHA_INIT


class RevIN(nn.Module):
    """Per-window, per-channel standardization of the input, undone on the output (Kim et al. 2022)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def norm(self, x):  # [B, L, C]
        self.mu = x.mean(1, keepdim=True).detach()
        self.sigma = (x.var(1, keepdim=True, unbiased=False) + self.eps).sqrt().detach()
        return (x - self.mu) / self.sigma * self.weight + self.bias

    def denorm(self, y):  # [B, H, C]
        return (y - self.bias) / (self.weight + self.eps * self.eps) * self.sigma + self.mu


class PatchedInput(nn.Module):
    """RevIN, channel-independent patches (the last value repeated to fill the final stride), a linear patch
    embedding plus a learned position: ``[B, L, C] -> [B * C, N, d_model]``; ``head`` maps ``[B * C, N * d_model]``
    back to ``[B, H, C]`` and undoes the normalization. Shared by the memory forecaster and PatchTST."""

    def __init__(self, lookback: int, horizon: int, channels: int, d_model: int, patch: int, stride: int):
        super().__init__()
        self.patch, self.stride, self.horizon = patch, stride, horizon
        self.n_patches = (lookback + stride - patch) // stride + 1
        self.revin = RevIN(channels)
        self.embed = nn.Linear(patch, d_model)
        self.pos = nn.Parameter(torch.randn(self.n_patches, d_model) * 0.02)
        self.out = nn.Linear(self.n_patches * d_model, horizon)

    def forward(self, x):
        B, L, C = x.shape
        x = F.pad(self.revin.norm(x).permute(0, 2, 1), (0, self.stride), mode="replicate")  # [B, C, L + stride]
        return self.embed(x.unfold(-1, self.patch, self.stride).reshape(B * C, -1, self.patch)) + self.pos

    def head(self, z, B: int, C: int):
        return self.revin.denorm(self.out(z.flatten(1)).view(B, C, self.horizon).permute(0, 2, 1))


class MemoryForecaster(nn.Module):
    def __init__(self, lookback: int, horizon: int, channels: int, *, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 4, patch: int = 16, stride: int = 8, chunk_size: int = 4, depth: int = 2):
        super().__init__()
        self.inp = PatchedInput(lookback, horizon, channels, d_model, patch, stride)
        self.norms1 = nn.ModuleList([nn.RMSNorm(d_model) for _ in range(n_layers)])
        # the forget gate's initial value of the committed forecasting table (the library's default is now 1e-3)
        self.mems = nn.ModuleList([NeuralMemory(d_model, n_heads, depth=depth, chunk_size=chunk_size,
                                                alpha_init=STUDY_ALPHA_INIT) for _ in range(n_layers)])
        self.norms2 = nn.ModuleList([nn.RMSNorm(d_model) for _ in range(n_layers)])
        self.mlps = nn.ModuleList([SwiGLU(d_model, 2 * d_model) for _ in range(n_layers)])

    def forward(self, x):
        B, L, C = x.shape
        z = self.inp(x)  # [B*C, N, d]
        for n1, mem, n2, mlp in zip(self.norms1, self.mems, self.norms2, self.mlps):
            z = z + mem(n1(z))[0]
            z = z + mlp(n2(z))
        return self.inp.head(z, B, C)


class DLinear(nn.Module):
    def __init__(self, lookback: int, horizon: int, channels: int, *, kernel: int = 25):
        super().__init__()
        self.kernel = kernel
        self.seasonal = nn.Linear(lookback, horizon)
        self.trend = nn.Linear(lookback, horizon)

    def forward(self, x):  # [B, L, C]
        pad = (self.kernel - 1) // 2
        xt = x.permute(0, 2, 1)
        padded = torch.cat([xt[..., :1].expand(-1, -1, pad), xt, xt[..., -1:].expand(-1, -1, self.kernel - 1 - pad)],
                           -1)
        trend = F.avg_pool1d(padded, self.kernel, stride=1)
        return (self.seasonal(xt - trend) + self.trend(trend)).permute(0, 2, 1)


class PatchTST(nn.Module):
    def __init__(self, lookback: int, horizon: int, channels: int, *, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 4, patch: int = 16, stride: int = 8, dropout: float = 0.1):
        super().__init__()
        self.inp = PatchedInput(lookback, horizon, channels, d_model, patch, stride)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def forward(self, x):
        B, L, C = x.shape
        return self.inp.head(self.encoder(self.inp(x)), B, C)


class TransformerForecaster(nn.Module):
    def __init__(self, lookback: int, horizon: int, channels: int, *, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.horizon, self.channels = horizon, channels
        self.revin = RevIN(channels)
        self.embed = nn.Linear(channels, d_model)
        pos = torch.arange(lookback)[:, None] / torch.pow(10000, torch.arange(0, d_model, 2) / d_model)
        self.register_buffer("pos", torch.cat([pos.sin(), pos.cos()], -1)[:, :d_model], persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(lookback * d_model, horizon * channels)

    def forward(self, x):
        B = x.shape[0]
        z = self.encoder(self.embed(self.revin.norm(x)) + self.pos)
        return self.revin.denorm(self.head(z.flatten(1)).view(B, self.horizon, self.channels))


class SeasonalNaive(nn.Module):
    """``y[t] = x[L - period + (t mod period)]``: the last period, repeated."""

    def __init__(self, lookback: int, horizon: int, channels: int, *, period: int = 24):
        super().__init__()
        if period > lookback:
            raise ValueError(f"period={period}: longer than the lookback {lookback}")
        self.period, self.horizon = period, horizon

    def forward(self, x):
        L = x.shape[1]
        idx = L - self.period + torch.arange(self.horizon, device=x.device) % self.period
        return x[:, idx]


FORECASTERS = {"lmm": MemoryForecaster, "dlinear": DLinear, "patchtst": PatchTST,
               "transformer": TransformerForecaster, "seasonal_naive": SeasonalNaive}


def build_forecaster(name: str, lookback: int, horizon: int, channels: int, **kw) -> nn.Module:
    if name not in FORECASTERS:
        raise ValueError(f"model={name!r}: must be one of {sorted(FORECASTERS)}")
    return FORECASTERS[name](lookback, horizon, channels, **kw)

