"""Training: configuration, the loop, checkpoints, evaluation, distributed wrapping."""

from .checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from .config import PRESETS, DataConfig, RunConfig, TrainConfig, apply_overrides
from .evaluate import evaluate_split, evaluate_task, window_nll
from .loop import lr_at, make_optimizer, plot_losses, resolve_device, train, train_step

__all__ = ["CheckpointError", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "load_model",
           "save_checkpoint",
           "PRESETS", "DataConfig", "RunConfig", "TrainConfig", "apply_overrides", "evaluate_split", "evaluate_task",
           "window_nll",
           "lr_at", "make_optimizer", "plot_losses", "resolve_device", "train", "train_step"]
