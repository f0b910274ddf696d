"""Loss, perplexity and bits per byte of a model on a token split, streamed in pieces (constant memory).

Losses are summed negative log-likelihoods over summed tokens (not a mean of batch means). A window longer than the
training context is fed ``piece`` tokens at a time with the carried state, so evaluating at 4x (or 100x) the
training length needs no more memory than at 1x (for every variant but ``transformer``, whose KV cache grows).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..data import eval_windows
from ..models.lm import upcast_logits


@torch.no_grad()
def window_nll(model, x: torch.Tensor, y: torch.Tensor, piece: int) -> torch.Tensor:
    """Summed NLL of ``y`` given ``x`` (both ``[B, L]``), fed ``piece`` tokens at a time. Returns ``[B]``."""
    state, total = None, torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for s in range(0, x.shape[1], piece):
        out = model(x[:, s:s + piece], state=state)
        state = out.state
        nll = F.cross_entropy(upcast_logits(out.logits).transpose(1, 2), y[:, s:s + piece], reduction="none")
        total += nll.sum(1).double()
    return total


@torch.no_grad()
def evaluate_split(model, tokens: np.ndarray, *, length: int, max_windows: int | None = None,
                   bytes_per_token: float = 1.0, piece: int | None = None, batch: int = 8,
                   device: torch.device | str = "cpu") -> dict:
    """``{"loss", "ppl", "bpb", "tokens"}`` over windows of ``length`` tokens of ``tokens``."""
    was_training = model.training
    model.eval()
    piece = piece or length
    nll, count = 0.0, 0
    windows = list(eval_windows(tokens, length=length, max_windows=max_windows))
    for i in range(0, len(windows), batch):
        xs, ys = zip(*windows[i:i + batch])
        x, y = torch.cat(xs).to(device), torch.cat(ys).to(device)
        nll += float(window_nll(model, x, y, piece).sum())
        count += y.numel()
    model.train(was_training)
    loss = nll / max(count, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50)), "bpb": loss / math.log(2) / bytes_per_token,
            "tokens": float(count)}
