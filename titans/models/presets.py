"""Model presets as functions returning a :class:`ModelConfig`.

Small ones for these CPUs (``tiny``, ``small``) and the paper's sizes (V2 Table 5: 170M, 340M, 760M, 1.3B with the
32K Llama-2 vocabulary, chunk 16, segment 512, window 2048, 128 persistent tokens, depth-2 memory with expansion 4).
Different variants have different mixers, so for a paper size the SwiGLU width is solved per variant to bring the
whole model to the named parameter count (the usual way to compare architectures at equal size).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .config import MemoryConfig, ModelConfig

PAPER_SIZES = {  # name: (target parameters, n_layers, d_model, n_heads)
    "170M": (170e6, 12, 768, 16),
    "340M": (340e6, 24, 1024, 16),
    "760M": (760e6, 24, 1536, 16),
    "1.3B": (1.3e9, 18, 2048, 8),
}


def tiny(variant: str = "mac", **kw) -> ModelConfig:
    """About 0.2M parameters plus embeddings (byte vocabulary): tests and smoke runs."""
    cfg = ModelConfig(variant=variant, vocab_size=256, d_model=64, n_layers=2, n_heads=4, window=32, segment_len=16,
                      n_persistent=4, memory=MemoryConfig(chunk_size=8))
    return replace(cfg, **kw)


def small(variant: str = "mac", **kw) -> ModelConfig:
    """About 3M parameters (byte vocabulary): CPU training studies in minutes to hours."""
    cfg = ModelConfig(variant=variant, vocab_size=256, d_model=256, n_layers=4, n_heads=4, window=128,
                      segment_len=64, n_persistent=8, memory=MemoryConfig(chunk_size=16))
    return replace(cfg, **kw)


def _count(cfg: ModelConfig) -> int:
    from .lm import TitansLM, count_params

    with torch.device("meta"):  # no memory, no initialization cost, even for 1.3B
        return count_params(TitansLM(cfg))


def match_params(cfg: ModelConfig, target: float, multiple: int = 64) -> ModelConfig:
    """``cfg`` with the SwiGLU width chosen so that the whole model has about ``target`` parameters."""
    base_cfg = replace(cfg, mlp_hidden=multiple)
    base = _count(base_cfg)
    per_unit = 3 * cfg.d_model * cfg.n_layers  # SwiGLU parameters per unit of hidden width
    hidden = max(multiple, round(((target - base) / per_unit + multiple) / multiple) * multiple)
    return replace(cfg, mlp_hidden=hidden)


def paper(size: str, variant: str = "mac", vocab_size: int = 32000, **kw) -> ModelConfig:
    """The paper's model at ``size`` (one of PAPER_SIZES) for ``variant``, MLP width solved to the named count."""
    if size not in PAPER_SIZES:
        raise ValueError(f"size={size!r}: must be one of {list(PAPER_SIZES)}")
    target, n_layers, d, heads = PAPER_SIZES[size]
    cfg = ModelConfig(variant=variant, vocab_size=vocab_size, d_model=d, n_layers=n_layers, n_heads=heads,
                      window=2048, segment_len=512, n_persistent=128, mlp_hidden=64,
                      memory=MemoryConfig(chunk_size=16, depth=2, expansion=4))
    return match_params(replace(cfg, **kw), target)


PRESETS = {"tiny": tiny, "small": small}
