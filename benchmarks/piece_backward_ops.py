"""How many operations a piece's backward launches, eager (``piece.piece_backward``) and compiled
(``piece_compiled.piece_backward_compiled``, ``KernelConfig.compiled``), and its time per piece on this CPU; prints a
table and writes JSON.

    python benchmarks/piece_backward_ops.py            # depth 2, LayerNorm + residual, a few shapes (a minute or two)
    python benchmarks/piece_backward_ops.py --out FILE.json

Why: on a GPU each eager operation is a launch with a fixed host cost (dispatch, autograd's engine, the launch), run
once per chunk in sequence, and where a call has few (batch row, head) pairs per chunk that cost is a large part of
the step (docs/benchmarks.md). Counted here without a GPU:

* ``eager ops``: the ATen operations ``piece_backward`` dispatches per piece (views, empties and other metadata
  operations left out: they launch nothing), each a kernel launch on a GPU;
* ``compiled kernels``: the kernels of the code Inductor generates for this CPU (its fused loops and the batched
  products it calls out for). Inductor's GPU code fuses the same graph into Triton kernels; their number differs
  somewhat (its reductions are scheduled differently), so this is the measure of the fusion, not a GPU count;
* the time per piece on this CPU, eager and compiled, median of ``--repeats``: at small shapes mostly the cost per
  operation, which is what the fusion removes; not a GPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import table, write_results  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from titans.ops.memory.chunk import decay_coefficients  # noqa: E402
from titans.ops.memory.piece import piece_backward, piece_forward  # noqa: E402
from titans.ops.memory.piece_compiled import piece_backward_compiled  # noqa: E402

# metadata operations: they make views or allocate, and launch no kernel on a GPU
NO_LAUNCH = {"view", "_unsafe_view", "expand", "permute", "transpose", "t", "select", "slice", "unsqueeze", "squeeze",
             "alias", "as_strided", "unbind", "split", "split_with_sizes", "detach", "_reshape_alias", "diagonal",
             "unfold", "lift_fresh", "empty", "empty_like", "new_empty", "empty_strided"}


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in NO_LAUNCH:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def piece_args(B, H, n, D, hidden, seed=0):
    """A depth-2 piece with a LayerNorm and residual (the gradients at its starting weights), its cotangents, and
    its intermediates: ``(args, saved)`` for ``piece_backward(*args, saved=saved)``."""
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s, scale=1.0: torch.randn(*s, generator=g) * scale  # noqa: E731
    q, k, v = mk(B, H, n, D), mk(B, H, n, D), mk(B, H, n, D)
    gates = [torch.rand(2, B, H, n, generator=g) * s for s in (0.1, 0.9, 0.5)]
    beta, gamma, C, hv, M = decay_coefficients(*gates)
    coef = (beta, gamma, C, beta[..., -1], gamma[..., -1], C[..., -1, :], hv[..., -1], M[..., -1, :])
    W = [mk(B, H, D, hidden, scale=D ** -0.5), mk(B, H, hidden, D, scale=hidden ** -0.5)]
    S = [mk(*w.shape, scale=0.01) for w in W]
    norm = (1 + mk(H, D, scale=0.1), mk(H, D, scale=0.1))
    _, saved = piece_forward(q, k, v, coef, W, W, S, norm, "gelu", True, keep=True)
    cot = (mk(B, H, n, D), [mk(*w.shape) for w in W], [mk(*w.shape) for w in W])
    return (*cot, q, k, v, coef, W, W, S, norm, "gelu", True), saved


def generated_kernels(args, saved) -> int:
    """Kernels in the code Inductor generates for this CPU: fused loops and called-out products."""
    from torch._inductor.utils import run_and_get_code

    from titans.ops.memory import piece_compiled

    torch._dynamo.reset()
    piece_compiled._compiled.cache_clear()
    _, codes = run_and_get_code(piece_backward_compiled, *args, saved=saved)
    call = "".join(code[code.index("def call("):] for code in codes if "def call(" in code)
    return len(re.findall(r"\bcpp_fused_\w+\(", call)) + len(re.findall(r"extern_kernels\.\w+\(", call))


def seconds(fn, args, saved, repeats) -> float:
    fn(*args, saved=saved)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args, saved=saved)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,2,16,16,64;4,8,64,64,256;2,8,64,128,512;4,8,16,64,256",
                    help="'B,H,n,D,hidden;...': batch, heads, piece length, head dim, hidden width")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/piece_backward_ops.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    result = {"machine": platform.processor() or platform.machine(), "threads": a.threads, "torch": torch.__version__,
              "rows": []}
    for spec in a.sizes.split(";"):
        B, H, n, D, hidden = (int(x) for x in spec.split(","))
        args, saved = piece_args(B, H, n, D, hidden)
        with _Count() as mode:
            piece_backward(*args, saved=saved)
        row = {"B": B, "H": H, "n": n, "D": D, "hidden": hidden, "eager ops": sum(mode.ops.values()),
               "eager matmuls": mode.ops["bmm"] + mode.ops["mm"]}
        row["compiled kernels"] = generated_kernels(args, saved)
        row["eager ms"] = 1e3 * seconds(piece_backward, args, saved, a.repeats)
        row["compiled ms"] = 1e3 * seconds(piece_backward_compiled, args, saved, a.repeats)
        row["eager/compiled"] = row["eager ms"] / row["compiled ms"]
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        write_results(a.out, result)
    print(table(result["rows"], list(result["rows"][0])))


if __name__ == "__main__":
    main()
