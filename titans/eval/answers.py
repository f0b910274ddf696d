"""Answer a batch of long prompts with a streamed model: greedy generation and the answer's log-likelihood.

The prompt is fed ``piece`` tokens at a time with the carried state (:class:`titans.models.ModelState`), so a prompt
of any length costs the memory of one piece plus the model's state: constant for every variant but ``transformer``,
whose KV cache grows with the prompt. Model states are values (a forward call never changes the state it is given),
so the state after the prompt serves both the teacher-forced answer and the greedy decode.
"""

from __future__ import annotations

import torch

from ..models.lm import state_nbytes, upcast_logits


@torch.no_grad()
def prompt_state(model, prompts: torch.Tensor, piece: int):
    """Stream ``prompts [B, P]``; returns ``(state, last_logits [B, V])``."""
    if prompts.dim() != 2 or prompts.shape[1] < 1:
        raise ValueError(f"prompts: expected [B, P] with P >= 1, got {tuple(prompts.shape)}")
    if piece < 1:
        raise ValueError(f"piece={piece}: must be >= 1")
    state, last = None, None
    for s in range(0, prompts.shape[1], piece):
        out = model(prompts[:, s:s + piece], state=state)
        state, last = out.state, out.logits[:, -1]
    return state, last


@torch.no_grad()
def answer_logprob(model, state, last_logits: torch.Tensor, answers: list[list[int]]) -> torch.Tensor:
    """Sum of ``log p(answer tokens)`` given the prompt's state (teacher forcing). Returns ``[B]`` float64."""
    B, A = len(answers), max(len(a) for a in answers)
    ans = torch.zeros(B, A, dtype=torch.long, device=last_logits.device)
    mask = torch.zeros(B, A, dtype=torch.bool, device=last_logits.device)
    for i, a in enumerate(answers):
        ans[i, :len(a)] = torch.tensor(a)
        mask[i, :len(a)] = True
    logits = last_logits[:, None]
    if A > 1:
        logits = torch.cat([logits, model(ans[:, :-1], state=state).logits], 1)
    logp = upcast_logits(logits).double().log_softmax(-1).gather(-1, ans[..., None])[..., 0]
    return (logp * mask).sum(1)


@torch.no_grad()
def greedy(model, state, last_logits: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` greedy tokens after the prompt, one at a time through the state. Returns ``[B, n]``."""
    out, logits = [], last_logits
    for i in range(n):
        nxt = logits.argmax(-1, keepdim=True)
        out.append(nxt)
        if i < n - 1:
            o = model(nxt, state=state)
            state, logits = o.state, o.logits[:, -1]
    return torch.cat(out, 1)


@torch.no_grad()
def answer_batch(model, prompts: torch.Tensor, answers: list[list[int]], *, piece: int, extra: int = 2):
    """Stream ``prompts [B, P]`` and answer: ``(generated [B, max_answer + extra] ids, logprob [B], state bytes)``.
    ``extra`` tokens past the longest answer let exact match see whether the answer ends where it should."""
    if len(answers) != prompts.shape[0] or not all(answers):
        raise ValueError(f"answers: one non-empty answer per prompt expected ({prompts.shape[0]} prompts)")
    state, last = prompt_state(model, prompts, piece)
    logprob = answer_logprob(model, state, last, answers)
    gen = greedy(model, state, last, max(len(a) for a in answers) + extra)
    return gen, logprob, state_nbytes(state)


@torch.no_grad()
def recall_accuracy(model, idx: torch.Tensor, targets: torch.Tensor, piece: int) -> tuple[int, int]:
    """MQAR: ``(correct, total)`` argmax predictions at the positions where ``targets != -100``, streamed."""
    state, hits, total = None, 0, 0
    for s in range(0, idx.shape[1], piece):
        out = model(idx[:, s:s + piece], state=state)
        state = out.state
        y = targets[:, s:s + piece]
        mask = y != -100
        hits += int(((out.logits.argmax(-1) == y) & mask).sum())
        total += int(mask.sum())
    return hits, total

