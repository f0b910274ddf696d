"""Slicing a streaming state out of a longer activation without keeping the activation alive."""

from __future__ import annotations

import torch


def keep_last(x: torch.Tensor, n: int, dim: int = 1) -> torch.Tensor:
    """The last ``n`` entries of ``x`` along ``dim`` (all of them if there are fewer), to carry as a state.

    A slice is a view, and a view keeps its whole base alive for as long as the state lives: after a long prefill the
    conv cache or the attention window would hold every token's activations. So the slice is copied when ``x`` is more
    than twice as long as what is kept; not per decoding step, where ``x`` is one token longer than the state and a
    copy would move the whole state to free one token.
    """
    size = x.shape[dim]
    n = min(n, size)
    last = x.narrow(dim, size - n, n)
    return last.clone() if size > 2 * n else last
