"""``TitansLM``: token embedding -> blocks of the chosen variant -> RMSNorm -> LM head (SPEC §3).

Example::

    >>> import torch, titans
    >>> model = titans.TitansLM(titans.ModelConfig(variant="mac", vocab_size=256, d_model=64, n_layers=2, n_heads=4))
    >>> idx = torch.randint(0, 256, (2, 100))
    >>> out = model(idx, targets=idx.roll(-1, 1))
    >>> out.logits.shape, out.loss.ndim                     # ([2, 100, 256], 0)
    >>> out2 = model(idx[:, :60]); out3 = model(idx[:, 60:], state=out2.state)   # streams exactly
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .lmm import LMMBlock
from .mac import MACBlock
from .mag import MAGBlock
from .mal import MALBlock
from .swa import SWABlock
from .transformer import TransformerBlock

BLOCKS = {"lmm": LMMBlock, "mac": MACBlock, "mag": MAGBlock, "mal": MALBlock, "transformer": TransformerBlock,
          "swa": SWABlock}


class ModelState(NamedTuple):
    """What a model carries between calls: tokens consumed so far and one state per block."""

    pos: int
    layers: tuple


class LMOutput(NamedTuple):
    logits: torch.Tensor  # [B, T, V]
    loss: torch.Tensor | None  # mean cross-entropy over targets != -100
    state: ModelState


def upcast_logits(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits to float32 for the loss; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def state_nbytes(state) -> int:
    """Bytes held by the tensors of a (nested) state."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, (tuple, list)):
        return sum(state_nbytes(s) for s in state)
    return 0


def detach_state(state):
    """The same state cut from the autograd graph (for truncated backpropagation through time)."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple):
        items = [detach_state(s) for s in state]
        return type(state)(*items) if hasattr(state, "_fields") else tuple(items)
    return state


def count_params(model: nn.Module, *, embeddings: bool = True) -> int:
    """Number of parameters; ``embeddings=False`` leaves out the token embedding and (untied) LM head."""
    n = sum(p.numel() for p in model.parameters())
    if not embeddings and isinstance(model, TitansLM):
        n -= model.embed.weight.numel()
        if model.head.weight is not model.embed.weight:
            n -= model.head.weight.numel()
    return n


class TitansLM(nn.Module):
    """A language model of one Titans variant (or baseline); see :class:`ModelConfig`.

    ``forward(idx [B, T] int64, targets [B, T] | None, state | None) -> LMOutput(logits, loss, state)``.
    Feeding a sequence in pieces with the returned state gives the same logits as one call.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList([BLOCKS[cfg.variant](cfg) for _ in range(cfg.n_layers)])
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    def _init_weights(self):
        # Linear and embedding weights ~ N(0, init_std); residual output projections scaled by 1/sqrt(2 n_layers)
        # (GPT-2). Modules with their own initialization (memory gates, W_0, conv) keep it.
        std = self.cfg.init_std
        for name, mod in self.named_modules():
            if isinstance(mod, nn.Embedding):
                nn.init.normal_(mod.weight, std=std)
            elif isinstance(mod, nn.Linear) and not name.endswith(".gates"):
                scale = (2 * self.cfg.n_layers) ** -0.5 if name.endswith(("out", "out_proj", "w2")) else 1.0
                nn.init.normal_(mod.weight, std=std * scale)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, state: ModelState | None = None):
        self._check_idx(idx)
        if targets is not None and targets.shape != idx.shape:
            raise ValueError(f"targets: shape {tuple(targets.shape)} must equal idx's {tuple(idx.shape)}")
        h, state = self._features(idx, state)
        logits = self.head(h)
        loss = None
        if targets is not None:
            flat = upcast_logits(logits).reshape(-1, logits.shape[-1])
            loss = F.cross_entropy(flat, targets.reshape(-1), ignore_index=-100)
        return LMOutput(logits, loss, state)

    def features(self, idx: torch.Tensor, state: ModelState | None = None):
        """The final normalized hidden states ``[B, T, d_model]`` (what the LM head reads) and the new state; for
        heads other than next-token prediction (sequence classification)."""
        self._check_idx(idx)
        return self._features(idx, state)

    def _check_idx(self, idx):
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx: expected an int64 tensor [B, T], got {getattr(idx, 'dtype', type(idx))} "
                             f"{tuple(getattr(idx, 'shape', ()))}")
        # The range check reads values (a host sync); compiled, it would split the graph in two, so a compiled
        # model trusts its ids, as the training loop's loaders guarantee them.
        if torch.compiler.is_compiling():
            return
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.cfg.vocab_size):
            raise ValueError(f"idx: token ids must lie in [0, vocab_size={self.cfg.vocab_size}), "
                             f"got [{int(idx.min())}, {int(idx.max())}]")

    def _features(self, idx, state):
        T = idx.shape[1]
        pos0 = state.pos if state is not None else 0
        layer_states = state.layers if state is not None else (None,) * len(self.blocks)
        positions = torch.arange(pos0, pos0 + T, device=idx.device)
        x = self.embed(idx)
        new_states = []
        for block, st in zip(self.blocks, layer_states):
            x, st = block(x, positions, st)
            new_states.append(st)
        return self.norm(x), ModelState(pos0 + T, tuple(new_states))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
                 state: ModelState | None = None, generator: torch.Generator | None = None):
        """Sample ``max_new_tokens`` after the prompt ``idx [B, T]``, one token at a time through the streaming state
        (the prefix is never recomputed). ``temperature=0`` is greedy. Returns ``(tokens [B, T + new], state)``."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 0")
        if not temperature >= 0:
            raise ValueError(f"temperature={temperature}: must be >= 0 (0 is greedy)")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k={top_k}: must be >= 1 or None (no cut)")
        out = self(idx, state=state)
        state, logits = out.state, out.logits[:, -1]
        new = []
        for i in range(max_new_tokens):
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(logits.float().softmax(-1), 1, generator=generator)
            new.append(nxt)
            if i < max_new_tokens - 1:
                out = self(nxt, state=state)
                state, logits = out.state, out.logits[:, -1]
        return torch.cat([idx, *new], 1), state


@torch.no_grad()
def stream(model: TitansLM, tokens: torch.Tensor, *, piece: int = 1024, state: ModelState | None = None,
           callback=None):
    """Run a long token stream ``tokens [B, N]`` through ``model`` in pieces of ``piece`` tokens, carrying the state,
    and return the per-position losses ``[B, N - 1]`` (position t predicts token t+1) and the final state.

    Memory stays bounded by the piece and the model's state (constant for every variant but ``transformer``).
    ``callback(done, total, state)`` is called after each piece (progress, memory probes).
    """
    B, N = tokens.shape
    losses = []
    for start in range(0, N - 1, piece):
        end = min(start + piece, N - 1)
        out = model(tokens[:, start:end], state=state)
        state = out.state
        nll = F.cross_entropy(upcast_logits(out.logits).transpose(1, 2), tokens[:, start + 1:end + 1], reduction="none")
        losses.append(nll)
        if callback is not None:
            callback(end, N - 1, state)
    return (torch.cat(losses, 1) if losses else tokens.new_zeros(B, 0, dtype=torch.float32)), state
