"""titans: Titans (Behrouz, Zhong, Mirrokni, "Learning to Memorize at Test Time") in PyTorch."""

from . import layers, models, ops
from .models import MemoryConfig, ModelConfig, TitansLM
from .ops import MemoryState, memory_retrieve, memory_update

__all__ = ["layers", "models", "ops", "MemoryConfig", "ModelConfig", "TitansLM", "MemoryState", "memory_update",
           "memory_retrieve"]
__version__ = "0.1.0"
