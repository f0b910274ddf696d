"""nn.Modules that own parameters and call ``titans.ops``."""

from .attention import Attention, KVCache, attend, attention_mask
from .conv import CausalDepthwiseConv1d
from .memory import NeuralMemory, NeuralMemoryState
from .mlp import SwiGLU

__all__ = ["Attention", "KVCache", "attend", "attention_mask", "CausalDepthwiseConv1d", "NeuralMemory",
           "NeuralMemoryState", "SwiGLU"]
