"""What happens to a trained model's memory when it streams far past its training length (CPU; seconds a model).

    python benchmarks/memory_drift.py --ckpt runs/study_lm_depth/lmm-slowforget --ckpt runs/study_lm_1000/lmm \
        --length 16384 --out benchmarks/results/memory_drift.json

Feeds the first ``--length`` tokens of the validation split through each checkpoint in training-length pieces
(as ``titans eval`` streams) and records, at powers of two: the piece's bits per byte, and for every memory layer
the Frobenius norm of its weights ``W`` (each memory layer's, over the batch of one) and of its momentum ``S``, as
a fraction of the learned ``W_0``'s norm where it applies, plus the mean of the gates (theta, eta, alpha) over the
piece. Forgetting multiplies ``W`` by ``1 - alpha_t`` per token, toward zero, not toward ``W_0``: where the writes
are small, ``|W| / |W_0|`` falls like ``exp(-sum alpha)`` and whatever the model stored in its learned ``W_0``
fades with the stream.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import table, write_results  # noqa: E402

from titans.layers.memory import NeuralMemory  # noqa: E402


def _memory(state):
    """The ``MemoryState`` (weights and momentum) inside a block's state, however deep it is nested."""
    while not hasattr(state, "momentum"):
        state = state.memory
    return state


def drift(model, tokens: np.ndarray, piece: int, bytes_per_token: float = 1.0) -> list[dict]:
    """Stream ``tokens`` (1-D, at least ``piece + 1``) through ``model`` in pieces of ``piece``; one row per piece
    that ends at a power-of-two multiple of ``piece`` (and the last): ``t``, ``bpb`` of that piece, and per memory
    layer ``i``: ``W{i}`` (``|W| / |W_0|``, layers of the memory MLP summed in quadrature), ``S{i}`` (``|S| / |W_0|``)
    and ``theta{i}``, ``eta{i}``, ``alpha{i}`` (the piece's mean gates)."""
    mems = [m for m in model.modules() if isinstance(m, NeuralMemory)]
    gates = {}

    def hook(mod, inp, out):
        theta, eta, alpha, _ = mod._gates(inp[0], None)
        gates[id(mod)] = (float(theta.mean()), float(eta.mean()), float(alpha.mean()))

    handles = [m.register_forward_hook(hook) for m in mems]
    x = torch.as_tensor(np.asarray(tokens, dtype=np.int64))[None]
    n = (x.shape[1] - 1) // piece * piece
    marks = {piece * 2 ** i for i in range(64) if piece * 2 ** i <= n} | {n}
    rows, state = [], None
    with torch.no_grad():
        w0 = [math.sqrt(sum(float(w.norm()) ** 2 for w in mod.init_params)) for mod in mems]
    try:
        with torch.no_grad():
            for s in range(0, n, piece):
                out = model(x[:, s:s + piece], state=state)
                state = out.state
                if s + piece not in marks:
                    continue
                nll = torch.nn.functional.cross_entropy(out.logits[0].double(), x[0, s + 1:s + piece + 1])
                row = {"t": s + piece, "bpb": float(nll) / math.log(2) / bytes_per_token}
                layer_states = [ls for ls in state.layers if hasattr(ls, "memory")]
                for i, (mod, ls) in enumerate(zip(mems, layer_states)):
                    mem = _memory(ls)
                    row[f"W{i}"] = math.sqrt(sum(float(w.norm()) ** 2 for w in mem.params)) / w0[i]
                    row[f"S{i}"] = math.sqrt(sum(float(m.norm()) ** 2 for m in mem.momentum)) / w0[i]
                    row[f"theta{i}"], row[f"eta{i}"], row[f"alpha{i}"] = gates[id(mod)]
                rows.append(row)
    finally:
        for h in handles:
            h.remove()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", action="append", required=True, help="run or checkpoint folder (repeat for several)")
    ap.add_argument("--length", type=int, default=16384, help="tokens to stream")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from titans.data import prepare
    from titans.train import CheckpointError, load_model

    results = {}
    for ckpt in args.ckpt:
        try:
            model, cfg, path = load_model(ckpt)
        except CheckpointError as e:
            raise SystemExit(f"--ckpt {ckpt!r}: {e}") from None
        data = prepare(cfg.data.corpus, cfg.data.tokenizer, cfg.data.data_dir, cfg.data.val_fraction,
                       cfg.data.test_fraction)
        val = data.split("val")
        if len(val) < args.length + 1:
            raise SystemExit(f"--length {args.length}: the validation split has only {len(val)} tokens")
        rows = drift(model, val[:args.length + 1], cfg.data.seq_len, data.meta["bytes_per_token"])
        results[ckpt] = {"checkpoint": path, "variant": cfg.model.variant, "piece": cfg.data.seq_len, "rows": rows}
        cols = ["t", "bpb"] + [k for k in rows[0] if k[0] in "WS" or k.startswith("alpha")]
        print(f"\n{ckpt} ({cfg.model.variant}, trained at {cfg.data.seq_len})\n" + table(rows, cols))
    if args.out:
        write_results(args.out, {"length": args.length, "threads": args.threads, "results": results})


if __name__ == "__main__":
    main()
