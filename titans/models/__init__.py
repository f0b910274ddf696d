"""Titans language models (SPEC §3): LMM, MAC, MAG, MAL and the Transformer++ / sliding-window baselines."""

from .config import STUDY_ALPHA_INIT, VARIANTS, MemoryConfig, ModelConfig
from .lm import BLOCKS, LMOutput, ModelState, TitansLM, count_params, detach_state, state_nbytes, stream
from .presets import PAPER_SIZES, match_params, paper, small, tiny

__all__ = ["STUDY_ALPHA_INIT", "VARIANTS", "MemoryConfig", "ModelConfig", "BLOCKS", "LMOutput", "ModelState",
           "TitansLM", "count_params", "detach_state", "state_nbytes", "stream", "PAPER_SIZES", "match_params", "paper",
           "small", "tiny"]
