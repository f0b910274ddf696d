"""Checkpoints: model weights in safetensors, the rest loaded with ``weights_only=True``, written atomically.

A checkpoint is a folder ``<out_dir>/checkpoints/step_000123/`` holding

    model.safetensors   the model's weights (no pickle)
    state.pt            optimizer state, step, RNG states: tensors and plain Python only (``weights_only=True``)
    config.json         the resolved RunConfig
    meta.json           step, file sizes and sha256 (checked on load: a truncated or altered file is an error)

It is written into a temporary folder, synced, then renamed: a crash leaves either the previous checkpoint or the
new one, never half of one. ``latest_checkpoint`` only considers complete folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import torch
from safetensors.torch import load_file, save_file

from ..models import TitansLM
from .config import RunConfig

_STEP = re.compile(r"^step_(\d{6,})$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, truncated, altered, or for another model)."""


def _sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(out_dir: str, step: int, weights: dict[str, torch.Tensor], state: dict, config: dict,
                    keep_last: int = 2) -> str:
    """Write checkpoint ``step`` atomically; delete all but the newest ``keep_last``. Returns its folder.
    ``weights``: the model's full state dict (``parallel.full_states`` gathers it whatever the parallelism)."""
    root = os.path.join(out_dir, "checkpoints")
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"step_{step:06d}")
    tmp = os.path.join(root, f".tmp_step_{step:06d}_{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    # Tied weights share storage; safetensors refuses shared tensors, so store each name's own copy.
    own = {k: v.detach().contiguous().clone() for k, v in weights.items()}
    save_file(own, os.path.join(tmp, "model.safetensors"))
    torch.save(state, os.path.join(tmp, "state.pt"))
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    files = {name: {"bytes": os.path.getsize(os.path.join(tmp, name)), "sha256": _sha(os.path.join(tmp, name))}
             for name in ("model.safetensors", "state.pt", "config.json")}
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump({"step": step, "files": files}, f, indent=1)
    for name in os.listdir(tmp):
        with open(os.path.join(tmp, name), "rb") as f:
            os.fsync(f.fileno())
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(out_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out_dir: str) -> list[str]:
    """Complete checkpoint folders of a run, oldest first."""
    root = os.path.join(out_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), os.path.join(root, n)) for n in os.listdir(root) if (m := _STEP.match(n))]
    return [p for _, p in sorted(found) if os.path.exists(os.path.join(p, "meta.json"))]


def latest_checkpoint(out_dir: str) -> str | None:
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: str) -> tuple[dict, dict, dict]:
    """``(weights, state, config)`` of a checkpoint folder, after checking every file against its meta."""
    meta_path = os.path.join(path, "meta.json")
    if not os.path.isfile(meta_path):
        raise CheckpointError(f"{path}: not a checkpoint folder (no meta.json)")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path}: unreadable ({e})") from e
    for name, info in meta.get("files", {}).items():
        p = os.path.join(path, name)
        if not os.path.isfile(p):
            raise CheckpointError(f"{p}: missing")
        if os.path.getsize(p) != info["bytes"]:
            raise CheckpointError(f"{p}: {os.path.getsize(p)} bytes, expected {info['bytes']} (truncated?)")
        if _sha(p) != info["sha256"]:
            raise CheckpointError(f"{p}: checksum mismatch (corrupted or altered)")
    try:
        weights = load_file(os.path.join(path, "model.safetensors"))
        state = torch.load(os.path.join(path, "state.pt"), map_location="cpu", weights_only=True)
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
    except Exception as e:  # noqa: BLE001 - any decoding failure means an unusable checkpoint
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e})") from e
    return weights, state, config


# What makes two runs the same run: resuming (or reusing a finished run) under a config that differs in one of these
# would continue, or report, another run's weights as this one's. max_steps, stop_at, eval and checkpoint cadence,
# the device, the output folder, the accumulation (train.grad_accum: a step's global batch is the same sequences
# however it is split) and the sharding (train.fsdp) may change between invocations.
SAME_RUN = ("model", "train.seed", "train.batch_size", "data.corpus", "data.tokenizer",
            "data.seq_len", "data.val_fraction", "data.test_fraction", "data.task", "data.task_loss")
# Fields of the model that choose how it is computed, not what it computes (the implementations agree to the dtype's
# tolerance): a run may resume under another one, e.g. trained with impl="chunk" on a CPU, resumed with "triton".
HOW_NOT_WHAT = ("model.memory.impl", "model.memory.save_intermediates", "model.attn_impl")


def _at(d: dict, key: str):
    """The value at a dotted ``key`` of nested dicts, or None where a level is missing."""
    for part in key.split("."):
        d = (d or {}).get(part)
    return d


def _first_difference(a, b, key: str):
    """The first dotted key under ``key`` where ``a`` (saved) differs from ``b``, or None; keys missing from ``a``
    (an older checkpoint, before the field existed) and ``HOW_NOT_WHAT`` pass."""
    if a is None or key in HOW_NOT_WHAT:
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        return next((d for k in a if (d := _first_difference(a[k], b.get(k), f"{key}.{k}"))), None)
    return None if a == b else key


def check_same_run(saved: dict, config: dict, path: str = "checkpoint"):
    """Raise ``ValueError`` naming the field when ``saved`` (a checkpoint's RunConfig dict) is another run than
    ``config`` (``RunConfig.to_dict()``) in one of ``SAME_RUN``; a field missing from an older checkpoint passes, and
    so does one of ``HOW_NOT_WHAT``."""
    for key in SAME_RUN:
        if (diff := _first_difference(_at(saved, key), _at(config, key), key)) is not None:
            raise ValueError(f"{path} was trained with {diff}={_at(saved, diff)!r}, not {_at(config, diff)!r}: resume "
                             f"it with its own config, or use another output folder")


def check_run_folder(out_dir: str, config: dict):
    """``check_same_run`` against the latest checkpoint in ``out_dir``, if any: for commands that reuse a finished
    run, so that a run of another seed or length in the folder is an error before any work, not a silent reuse."""
    if ckpt := latest_checkpoint(out_dir):
        check_same_run(load_checkpoint(ckpt)[2], config, ckpt)


def load_model_weights(model: torch.nn.Module, weights: dict, path: str = "checkpoint"):
    """Load weights strictly; a mismatch (another model or config) is a CheckpointError naming the keys."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    bad = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(f"{path}: does not match the model (missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}, shape mismatch {bad[:5]})")
    model.load_state_dict(weights)


def load_model(ckpt: str, device: str | torch.device = "cpu"):
    """A trained model from a run folder (its latest checkpoint) or a checkpoint folder.

    Returns ``(model, config, path)``: the ``TitansLM`` in eval mode on ``device``, the run's ``RunConfig`` (its
    data fields say how the model was trained: tokenizer, ``seq_len``, task) and the checkpoint folder read. Raises
    ``CheckpointError`` naming ``ckpt`` when it holds no checkpoint, and on any file that fails its check.

        model, cfg, _ = load_model("runs/mag")
        out = model(idx)                      # idx [B, T] token ids -> out.logits [B, T, vocab]
    """
    path = ckpt if os.path.isfile(os.path.join(ckpt, "meta.json")) else latest_checkpoint(ckpt)
    if path is None:
        raise CheckpointError(f"{ckpt}: no checkpoint found (expected a run folder or a checkpoint folder)")
    weights, _, config = load_checkpoint(path)
    cfg = RunConfig.from_dict(config)
    model = TitansLM(cfg.model)
    load_model_weights(model, weights, path)
    return model.to(device).eval(), cfg, path
