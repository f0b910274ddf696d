"""Sequence classifiers over DNA tokens, all ``forward(x [B, T] int64) -> logits [B, n_classes]``.

- the six language-model variants (``lmm``, ``mac``, ``mag``, ``mal``, ``transformer``, ``swa``): a
  :class:`titans.TitansLM` backbone (its final normalized hidden states), mean-pooled over the window, then a linear
  head. The backbone is causal, so it can also be pretrained on next-nucleotide prediction first (HyenaDNA's recipe,
  which the paper follows) and a long sequence can be classified in pieces through its state (:meth:`forward`'s
  ``piece``; the running sum of the features is carried, so the result equals one call). The paper's Table 4 row is
  the memory alone, ``lmm``.
- ``cnn``: the GenomicBenchmarks baseline (Grešová et al. 2023): embedding, three convolution / ReLU / batch-norm /
  max-pool stages, a linear head (here after global average pooling, so any length works).
- ``kmer``: logistic regression on the window's k-mer frequencies (k = 6 by default): what composition alone
  gives, the floor a sequence model has to beat.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..models import STUDY_ALPHA_INIT, VARIANTS, MemoryConfig, ModelConfig, TitansLM
from ..models.ablations import ABLATIONS, ablate, split_name
from ..models.lm import upcast_logits
from .data import VOCAB


def backbone_config(variant: str, **kw) -> ModelConfig:
    """The classifiers' backbone: d_model 64, 2 layers, 4 heads, attention window 64, MAC segment 32, 4 persistent
    tokens, depth-2 memory with chunk 16 (about 0.1M parameters); ``kw`` overrides any :class:`ModelConfig` field.
    The forget gate starts at ``STUDY_ALPHA_INIT`` (0.01), as in the committed tables; ``-slowforget`` models use the
    library's default 1e-3."""
    cfg = ModelConfig(variant=variant, vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, window=64, segment_len=32,
                      n_persistent=4, memory=MemoryConfig(chunk_size=16, alpha_init=STUDY_ALPHA_INIT))
    return replace(cfg, **kw)


class SequenceClassifier(nn.Module):
    """A :class:`TitansLM` backbone, mean pooling over positions, a linear head."""

    def __init__(self, cfg: ModelConfig, n_classes: int):
        super().__init__()
        self.lm = TitansLM(cfg)
        self.cls = nn.Linear(cfg.d_model, n_classes)

    def forward(self, x: torch.Tensor, piece: int | None = None) -> torch.Tensor:
        """``x [B, T]`` -> ``[B, n_classes]``; with ``piece``, ``x`` is fed ``piece`` tokens at a time through the
        backbone's state (constant memory in ``T`` for every variant but ``transformer``)."""
        if piece is None:
            return self.cls(self.lm.features(x)[0].mean(1))
        if not isinstance(piece, int) or piece < 1:
            raise ValueError(f"piece={piece!r}: must be an int >= 1")
        total, state = 0, None
        for s in range(0, x.shape[1], piece):
            h, state = self.lm.features(x[:, s:s + piece], state)
            total = total + h.sum(1)
        return self.cls(total / x.shape[1])

    def lm_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Next-nucleotide cross-entropy of the backbone on ``x [B, T]`` (pretraining)."""
        return self.lm(x[:, :-1], targets=x[:, 1:]).loss


class CNN(nn.Module):
    """GenomicBenchmarks' CNN: embedding, 3 x (conv k=8 -> ReLU -> BatchNorm -> MaxPool 2), global mean, linear."""

    def __init__(self, n_classes: int, *, embed: int = 16, channels: int = 16, kernel: int = 8):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed)
        layers, c = [], embed
        for _ in range(3):
            layers += [nn.Conv1d(c, channels, kernel, padding=kernel // 2), nn.ReLU(), nn.BatchNorm1d(channels),
                       nn.MaxPool1d(2, ceil_mode=True)]
            c = channels
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x):
        return self.head(self.convs(self.embed(x).transpose(1, 2)).mean(-1))


class KmerLinear(nn.Module):
    """Logistic regression on k-mer frequencies: ``[B, T]`` -> counts of the ``4**k`` k-mers (those holding an N
    skipped) / their total -> linear."""

    def __init__(self, n_classes: int, *, k: int = 6):
        super().__init__()
        self.k = k
        self.register_buffer("base", 4 ** torch.arange(k - 1, -1, -1), persistent=False)
        self.linear = nn.Linear(4 ** k, n_classes)

    def forward(self, x):
        win = x.unfold(1, self.k, 1)  # [B, T-k+1, k]
        ok = (win < 4).all(-1)
        idx = (win.clamp(max=3) * self.base).sum(-1).masked_fill(~ok, 0)
        counts = torch.zeros(x.shape[0], 4 ** self.k, device=x.device).scatter_add_(1, idx, ok.float())
        return self.linear(counts / counts.sum(1, keepdim=True).clamp(min=1) * 4 ** self.k)  # mean feature ~ 1


MODELS = (*VARIANTS, "cnn", "kmer")


def check_model(name: str) -> str:
    """``name`` if it is one of :data:`MODELS` or a variant with an ablation (``"mac-slowforget"``, see
    :data:`titans.models.ablations.ABLATIONS`); a ``ValueError`` naming it otherwise."""
    variant, ablation = split_name(name)
    if variant not in MODELS or (ablation and variant not in VARIANTS):
        raise ValueError(f"model={name!r}: must be one of {list(MODELS)}, or one of {list(VARIANTS)} with an "
                         f"ablation suffix (-{', -'.join(ABLATIONS)})")
    if ablation:
        ablate(backbone_config(variant), ablation, name=name)  # an ablation this variant cannot take fails here
    return name


def build_classifier(name: str, n_classes: int, **kw) -> nn.Module:
    """A classifier by name (:func:`check_model`); ``kw`` goes to :func:`backbone_config` for the six variants."""
    variant, ablation = split_name(check_model(name))
    if variant in VARIANTS:
        return SequenceClassifier(ablate(backbone_config(variant, **kw), ablation, name=name), n_classes)
    if variant == "cnn":
        return CNN(n_classes, **kw)
    return KmerLinear(n_classes, **kw)


def pretrainable(model: nn.Module) -> bool:
    return isinstance(model, SequenceClassifier)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(upcast_logits(logits), y)
