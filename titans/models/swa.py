"""Sliding-window attention baseline: Transformer++ whose attention sees the last ``window`` tokens only."""

from __future__ import annotations

from .transformer import TransformerBlock


class SWABlock(TransformerBlock):
    """:class:`TransformerBlock` with attention restricted to ``cfg.window``; the cache keeps ``window - 1`` tokens."""

    def _window(self, cfg):
        return cfg.window
