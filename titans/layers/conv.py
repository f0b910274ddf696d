"""Causal depthwise 1-D convolution with a streaming cache (the short convolution after q/k/v, paper §4.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .state import keep_last

# Calls of at most this many tokens sum the taps directly instead of calling the convolution.
SHORT = 16


class CausalDepthwiseConv1d(nn.Module):
    """``y_t = sum_{i<K} w_i * x_{t-i}`` per channel, zeros before the first token.

    Args:
        channels (int): features C. kernel_size (int): K. Default: 4.
    Shapes:
        ``x``: ``[B, T, C]``; ``cache``: ``[B, K-1, C]`` (the last K-1 inputs seen) or None at the start.
        Returns ``(y [B, T, C], new_cache [B, K-1, C])``.
    """

    def __init__(self, channels: int, kernel_size: int = 4):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        # Start near identity (last tap ~1) so the mixer sees its own token at initialization.
        nn.init.normal_(self.weight, std=0.02)
        with torch.no_grad():
            self.weight[:, 0, -1] += 1.0

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None):
        B, T, C = x.shape
        K = self.kernel_size
        if cache is None:
            cache = x.new_zeros(B, K - 1, C)
        xx = torch.cat([cache, x], dim=1)  # [B, K-1+T, C]
        if T <= SHORT:
            # Decoding: a few taps as products beat the convolution kernel's fixed cost per call.
            w = self.weight[:, 0]  # [C, K]
            y = torch.addcmul(self.bias, xx[:, :T], w[:, 0])
            for i in range(1, K):
                y = torch.addcmul(y, xx[:, i:i + T], w[:, i])
        else:
            y = F.conv1d(xx.transpose(1, 2), self.weight, self.bias, groups=C).transpose(1, 2)
        return y, keep_last(xx, K - 1)
