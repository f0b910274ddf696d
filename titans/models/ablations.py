"""The paper's Table-5 ablations (and ours) as named changes of a :class:`ModelConfig`: ``"mac-noconv"`` is MAC without
the memory's convolution; changes chain left to right, ``"lmm-depth3-slowforget"`` is the LMM with a 3-layer memory
whose forget gate starts at 1e-3. Shared by every study that names models this way (``titans study lm|niah|mqar``,
``titans genomics``)."""

from __future__ import annotations

import dataclasses

from .config import ModelConfig

# name -> (ModelConfig fields to change, the variants that have them)
MODEL_ABLATIONS = {"nopersist": ({"n_persistent": 0}, ("mac", "mag", "mal")),  # the paper's last Table-5 row
                   "sumgate": ({"memory_gate": "sum"}, ("mac", "mag")),  # ours: titans.models.common.MemoryGate
                   "gatesum": ({"memory_gate": "gatesum"}, ("mac", "mag")),  # ours: the gate plus the sum's path
                   "inputwrite": ({"mac_write": "input"}, ("mac",)),  # ours: titans.models.mac
                   # ours: the memory's short convolution given to attention (titans.models.transformer)
                   "conv": ({"attn_conv": True}, ("transformer", "swa"))}
# every name -> MemoryConfig fields to change (None: a change of the ModelConfig, in MODEL_ABLATIONS)
ABLATIONS = {"linear": {"depth": 1}, "noconv": {"conv": False}, "nomomentum": {"momentum": False},
             "noforget": {"forgetting": False}, "slowforget": {"alpha_init": 0.001},
             "depth3": {"depth": 3}, "depth4": {"depth": 4},  # deeper memories: the paper's Fig. 7
             **dict.fromkeys(MODEL_ABLATIONS)}


def split_name(name: str) -> tuple[str, str]:
    """``"mac-noconv"`` -> ``("mac", "noconv")``; ``"lmm-depth3-slowforget"`` -> ``("lmm", "depth3-slowforget")``;
    ``"mag"`` -> ``("mag", "")``."""
    variant, _, ablation = name.partition("-")
    return variant, ablation


def ablate(cfg: ModelConfig, ablation: str, *, name: str | None = None) -> ModelConfig:
    """``cfg`` with ``ablation`` applied: a key of :data:`ABLATIONS`, several joined by ``-`` (applied in order), or
    ``""`` for none; ``name`` (the full model name, for the error message) defaults to the variant and ablation
    joined. A name that repeats an ablation or sets one field twice (``linear-depth3``) is an error."""
    name = name or f"{cfg.variant}-{ablation}"
    if not ablation:
        return cfg
    parts = ablation.split("-")
    for a in parts:
        if a not in ABLATIONS:
            raise ValueError(f"model {name!r}: unknown ablation {a!r}; choose from {sorted(ABLATIONS)}")
    fields = [f for a in parts for f in (ABLATIONS[a] or MODEL_ABLATIONS[a][0])]
    if len(set(fields)) < len(fields):
        raise ValueError(f"model {name!r}: ablations {parts} change the same setting twice")
    for a in parts:
        cfg = _ablate_one(cfg, a, name)
    return cfg


def _ablate_one(cfg: ModelConfig, ablation: str, name: str) -> ModelConfig:
    if ablation in MODEL_ABLATIONS:
        changes, variants = MODEL_ABLATIONS[ablation]
        if cfg.variant not in variants:
            what = {"nopersist": "no attention, hence no persistent tokens",
                    **dict.fromkeys(("sumgate", "gatesum"), "no gate between attention and memory"),
                    "conv": "its short convolution in the memory already (-noconv removes it)"
                    }.get(ablation, "no such setting")
            raise ValueError(f"model {name!r}: {cfg.variant} has {what} (-{ablation}: {', '.join(variants)} only)")
        return dataclasses.replace(cfg, **changes)
    if cfg.variant in ("transformer", "swa"):
        raise ValueError(f"model {name!r}: {cfg.variant} has no neural memory to ablate")
    return dataclasses.replace(cfg, memory=dataclasses.replace(cfg.memory, **ABLATIONS[ablation]))
