"""titans: Titans (Behrouz, Zhong, Mirrokni, "Learning to Memorize at Test Time") in PyTorch."""

from . import layers, ops
from .ops import MemoryState, memory_retrieve, memory_update

__all__ = ["layers", "ops", "MemoryState", "memory_update", "memory_retrieve"]
__version__ = "0.1.0"
