"""The paper's Table-5 ablations (and ours) as named changes of a :class:`ModelConfig`: ``"mac-noconv"`` is MAC without
the memory's convolution. Shared by every study that names models this way (``titans study lm|niah|mqar``,
``titans genomics``)."""

from __future__ import annotations

import dataclasses

from .config import ModelConfig

# name -> MemoryConfig fields to change (None: no persistent tokens, a ModelConfig field)
ABLATIONS = {"linear": {"depth": 1}, "noconv": {"conv": False}, "nomomentum": {"momentum": False},
             "noforget": {"forgetting": False}, "slowforget": {"alpha_init": 0.001}, "nopersist": None}


def split_name(name: str) -> tuple[str, str]:
    """``"mac-noconv"`` -> ``("mac", "noconv")``; ``"mag"`` -> ``("mag", "")``."""
    variant, _, ablation = name.partition("-")
    return variant, ablation


def ablate(cfg: ModelConfig, ablation: str, *, name: str | None = None) -> ModelConfig:
    """``cfg`` with ``ablation`` (a key of :data:`ABLATIONS`, or ``""`` for none) applied; ``name`` (the full model
    name, for the error message) defaults to the variant and ablation joined."""
    name = name or f"{cfg.variant}-{ablation}"
    if not ablation:
        return cfg
    if ablation not in ABLATIONS:
        raise ValueError(f"model {name!r}: unknown ablation {ablation!r}; choose from {sorted(ABLATIONS)}")
    if ablation == "nopersist":
        if cfg.variant not in ("mac", "mag", "mal"):
            raise ValueError(f"model {name!r}: {cfg.variant} has no attention, hence no persistent tokens")
        return dataclasses.replace(cfg, n_persistent=0)
    if cfg.variant in ("transformer", "swa"):
        raise ValueError(f"model {name!r}: {cfg.variant} has no neural memory to ablate")
    return dataclasses.replace(cfg, memory=dataclasses.replace(cfg.memory, **ABLATIONS[ablation]))
