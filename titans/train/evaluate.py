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
def window_nll(model, x: torch.Tensor, y: torch.Tensor, piece: int, per_token: bool = False) -> torch.Tensor:
    """Summed NLL of ``y`` given ``x`` (both ``[B, L]``), fed ``piece`` tokens at a time. Returns ``[B]`` float64, or
    with ``per_token`` each token's NLL ``[B, L]`` float64."""
    state, parts = None, []
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for s in range(0, x.shape[1], piece):
        out = model(x[:, s:s + piece], state=state)
        state = out.state
        nll = F.cross_entropy(upcast_logits(out.logits).transpose(1, 2), y[:, s:s + piece], reduction="none")
        if per_token:
            parts.append(nll.double())
        else:  # a running sum, as before per_token existed: the committed tables reproduce to the last bit
            total += nll.sum(1).double()
    return torch.cat(parts, 1) if per_token else total


@torch.no_grad()
def evaluate_split(model, tokens: np.ndarray, *, length: int, max_windows: int | None = None,
                   bytes_per_token: float = 1.0, piece: int | None = None, batch: int = 8,
                   device: torch.device | str = "cpu", positions: int | None = None) -> dict:
    """``{"loss", "ppl", "bpb", "tokens"}`` over windows of ``length`` tokens of ``tokens``. With ``positions=N``
    also ``"by_position"``: the windows' positions cut into ``N`` equal spans, each span's ``start``, ``end``,
    ``loss`` and ``bpb`` over every window (how the loss moves with the context a token has seen)."""
    if positions is not None and not 1 <= positions <= length:
        raise ValueError(f"positions={positions!r}: must be between 1 and the window length {length}")
    was_training = model.training
    model.eval()
    piece = piece or length
    nll, count = 0.0, 0
    edges = None if positions is None else [round(i * length / positions) for i in range(positions + 1)]
    span_nll = torch.zeros(positions or 0, dtype=torch.float64)
    span_n = 0
    windows = list(eval_windows(tokens, length=length, max_windows=max_windows))
    for i in range(0, len(windows), batch):
        xs, ys = zip(*windows[i:i + batch])
        x, y = torch.cat(xs).to(device), torch.cat(ys).to(device)
        if edges is None:
            nll += float(window_nll(model, x, y, piece).sum())
        else:
            per = window_nll(model, x, y, piece, per_token=True).cpu()  # [B, L]
            nll += float(per.sum())
            span_nll += torch.stack([per[:, a:b].sum() for a, b in zip(edges, edges[1:])])
            span_n += per.shape[0]
        count += y.numel()
    model.train(was_training)
    loss = nll / max(count, 1)
    out = {"loss": loss, "ppl": math.exp(min(loss, 50)), "bpb": loss / math.log(2) / bytes_per_token,
           "tokens": float(count)}
    if edges is not None:
        spans = []
        for (a, b), total in zip(zip(edges, edges[1:]), span_nll.tolist()):
            sl = total / max(1, span_n * (b - a))
            spans.append({"start": a, "end": b, "loss": sl, "bpb": sl / math.log(2) / bytes_per_token})
        out["by_position"] = spans
    return out


@torch.no_grad()
def evaluate_task(model, task: str, *, seq_len: int, batches: int, batch_size: int, seed: int, tokenizer,
                  vocab_size: int, device: torch.device | str = "cpu", on_batch=None) -> dict:
    """``{"loss", "ppl", "acc"}`` on held-out instances of a synthetic task (seeds no training step draws): the mean
    NLL per answer token, and the fraction of instances whose every answer token is the argmax (which is exactly
    whether greedy decoding reproduces the answer). For MQAR and MAD every scored token counts as one instance.
    ``on_batch(x, y, logits)``, if given, sees each held-out batch (``x, y [batch_size, seq_len]``, ``logits
    [batch_size, seq_len, V]``) so that a caller can score more from the same forward."""
    from ..data.synthetic.tasks import VAL_SEED_OFFSET, scored_per_token, task_batch

    was_training = model.training
    model.eval()
    nll, count, hits, n = 0.0, 0, 0, 0
    for i in range(batches):
        x, y = task_batch(task, seq_len=seq_len, batch_size=batch_size, seed=seed, step=VAL_SEED_OFFSET + i,
                          tokenizer=tokenizer, vocab_size=vocab_size, answer_only=True)
        x, y = x.to(device), y.to(device)
        logits = upcast_logits(model(x).logits)
        if on_batch is not None:
            on_batch(x, y, logits)
        mask = y != -100
        nll += float(F.cross_entropy(logits.transpose(1, 2), y, reduction="none", ignore_index=-100).sum())
        count += int(mask.sum())
        right = (logits.argmax(-1) == y) | ~mask
        if scored_per_token(task):
            hits, n = hits + int((right & mask).sum()), n + int(mask.sum())
        else:
            hits, n = hits + int(right.all(1).sum()), n + x.shape[0]
    model.train(was_training)
    loss = nll / max(count, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50)), "acc": hits / max(n, 1)}
