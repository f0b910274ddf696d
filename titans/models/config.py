"""Model configuration: ``ModelConfig`` (with a nested ``MemoryConfig``), validated on construction.

Every bad value raises a ``ValueError`` that names the field and the value, before any module is built.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..layers.memory import ALPHA_INIT

VARIANTS = ("lmm", "mac", "mag", "mal", "transformer", "swa")
MEMORY_GATES = ("sigmoid", "sum", "gatesum")  # how MAC and MAG mix attention and memory (models.common.MemoryGate)
MAC_WRITES = ("output", "input")  # what MAC's memory is written with (titans.models.mac)
ACTIVATIONS = ("gelu", "silu", "relu")
# The forget gate's initial value that the committed studies of docs/results.md (LM, long-context, forecasting,
# genomics) were trained with; the default has been ALPHA_INIT (1e-3) since (titans/layers/memory.py says why).
# Those studies' commands pin this value so that rerunning them reproduces their tables.
STUDY_ALPHA_INIT = 0.01


def _check(cond: bool, name: str, value, what: str):
    if not cond:
        raise ValueError(f"{name}={value!r}: {what}")


@dataclass(kw_only=True)
class MemoryConfig:
    """The neural memory of each block (SPEC §2). Paper V2 defaults, chunk size included."""

    depth: int = 2  # memory MLP layers L (1 = linear memory)
    expansion: int = 4  # hidden width of the memory MLP, in multiples of its head dim
    heads: int | None = None  # memory heads; None = the model's n_heads
    activation: str = "gelu"  # between memory layers
    residual: bool = True  # M(x) = x + ... (V2)
    layer_norm: bool = True  # LayerNorm on the memory's output (V2)
    chunk_size: int = 16  # inner mini-batch b: gradients at the weights before each chunk
    conv: bool = True  # causal depthwise conv (kernel 4) after q/k/v; False = ablation "w/o convolution"
    momentum: bool = True  # False = ablation "w/o momentum" (eta = 0)
    forgetting: bool = True  # False = ablation "w/o weight decay" (alpha = 0)
    alpha_init: float = ALPHA_INIT  # the forget gate's value at initialization, per token (1e-3)
    per_layer_gates: bool | None = None  # one theta/eta/alpha per memory layer; None = depth > 1
    chunk_gates: bool = False  # gates constant within a chunk (from its first token)
    theta_max: float = 0.1  # ceiling of the inner learning rate (hidden memory layers: divided by fan-in)
    impl: str = "chunk"  # memory op: "chunk" | "naive" | "triton" (GPU kernel; falls back to chunk)
    save_intermediates: bool = False  # chunk: keep each chunk's intermediates for the backward (more memory)

    def __post_init__(self):
        for name in ("depth", "expansion", "chunk_size"):
            val = getattr(self, name)
            _check(isinstance(val, int) and val >= 1, f"memory.{name}", val, "must be an int >= 1")
        _check(self.heads is None or (isinstance(self.heads, int) and self.heads >= 1), "memory.heads", self.heads,
               "must be None or an int >= 1")
        _check(self.activation in ACTIVATIONS, "memory.activation", self.activation, f"must be one of {ACTIVATIONS}")
        _check(self.theta_max > 0, "memory.theta_max", self.theta_max, "must be > 0")
        _check(0 < self.alpha_init < 1, "memory.alpha_init", self.alpha_init, "must be in (0, 1)")
        _check(self.impl in ("chunk", "naive", "triton"), "memory.impl", self.impl,
               "must be 'chunk', 'naive' or 'triton'")
        _check(isinstance(self.save_intermediates, bool), "memory.save_intermediates", self.save_intermediates,
               "must be a bool")


@dataclass(kw_only=True)
class ModelConfig:
    """A Titans language model (SPEC §3): embedding -> ``n_layers`` blocks -> RMSNorm -> LM head."""

    variant: str = "mac"  # one of VARIANTS
    vocab_size: int = 256  # byte-level by default
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    mlp_hidden: int | None = None  # SwiGLU hidden size; None = 8/3 d_model rounded up to a multiple of 64
    window: int = 64  # sliding window w of swa / mag / mal attention (token itself included)
    segment_len: int = 32  # MAC segment C
    n_persistent: int = 4  # persistent key/value pairs per attention (paper: 128); 0 = ablation
    rope_base: float = 10000.0
    attn_impl: str = "sdpa"  # "sdpa" | "naive" (reference)
    tie_embeddings: bool = False
    norm_eps: float = 1e-6
    init_std: float = 0.02
    memory_gate: str = "sigmoid"  # MAC / MAG: "sigmoid" (the paper's y ⊗ m, our reading) | "sum" | "gatesum" (ours)
    mac_write: str = "output"  # MAC's memory on the attention output (paper, Eq. 24) | "input" (ours, an ablation)
    attn_conv: bool = False  # transformer / swa: the memory's short convolution on the attention's input (ours)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def __post_init__(self):
        if isinstance(self.memory, dict):
            self.memory = MemoryConfig(**self.memory)
        _check(self.variant in VARIANTS, "variant", self.variant, f"must be one of {VARIANTS}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "window", "segment_len"):
            val = getattr(self, name)
            _check(isinstance(val, int) and val >= 1, name, val, "must be an int >= 1")
        _check(isinstance(self.n_persistent, int) and self.n_persistent >= 0, "n_persistent", self.n_persistent,
               "must be an int >= 0")
        _check(self.d_model % self.n_heads == 0, "n_heads", self.n_heads, f"must divide d_model={self.d_model}")
        _check((self.d_model // self.n_heads) % 2 == 0, "n_heads", self.n_heads,
               f"d_model/n_heads={self.d_model // self.n_heads} must be even (RoPE)")
        mh = self.memory.heads or self.n_heads
        _check(self.d_model % mh == 0, "memory.heads", mh, f"must divide d_model={self.d_model}")
        _check(self.mlp_hidden is None or (isinstance(self.mlp_hidden, int) and self.mlp_hidden >= 1), "mlp_hidden",
               self.mlp_hidden, "must be None or an int >= 1")
        _check(self.attn_impl in ("sdpa", "naive"), "attn_impl", self.attn_impl, "must be 'sdpa' or 'naive'")
        _check(self.memory_gate in MEMORY_GATES, "memory_gate", self.memory_gate, f"must be one of {MEMORY_GATES}")
        _check(self.mac_write in MAC_WRITES, "mac_write", self.mac_write, f"must be one of {MAC_WRITES}")
        _check(self.init_std > 0, "init_std", self.init_std, "must be > 0")
        _check(isinstance(self.attn_conv, bool), "attn_conv", self.attn_conv, "must be a bool")
        _check(not self.attn_conv or self.variant in ("transformer", "swa"), "attn_conv", self.attn_conv,
               f"is for transformer and swa only (variant={self.variant!r}: memory.conv is its convolution)")

    @property
    def ffn_hidden(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return -(-(8 * self.d_model // 3) // 64) * 64

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing keys take their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"ModelConfig: unknown field(s) {sorted(unknown)}")
        d = dict(d)
        if isinstance(d.get("memory"), dict):
            mknown = {f.name for f in fields(MemoryConfig)}
            bad = set(d["memory"]) - mknown
            if bad:
                raise ValueError(f"MemoryConfig: unknown field(s) {sorted(bad)}")
        return cls(**d)
