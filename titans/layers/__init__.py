"""nn.Modules that own parameters and call ``titans.ops``."""

from .conv import CausalDepthwiseConv1d
from .memory import NeuralMemory, NeuralMemoryState

__all__ = ["CausalDepthwiseConv1d", "NeuralMemory", "NeuralMemoryState"]
