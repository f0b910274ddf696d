"""Pure functions (no parameters of their own), each with a naive reference and a fast path."""

from .memory import MemoryState, memory_retrieve, memory_update

__all__ = ["MemoryState", "memory_update", "memory_retrieve"]
