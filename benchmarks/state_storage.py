"""The storage a streaming state keeps alive, against its own size, after one long call (a prefill).

    python benchmarks/state_storage.py                                  # prefills of 1K, 4K and 16K tokens
    python benchmarks/state_storage.py --lengths 4096 --variants mag --out FILE.json

Every ``small`` variant (d 256, 4 layers, window 128, MAC segment 64, chunk 16) reads ``--lengths`` random byte
tokens in one call, batch 1, no gradients, float32. ``state MiB``: the bytes of the state's tensors
(``titans.models.state_nbytes``); ``held MiB``: the bytes of the storages those tensors live in, each counted once,
which is what stays allocated while the state is kept. A state tensor sliced out of the call's activations (a view)
would make ``held`` grow with the call's length; copied out (``titans.layers.state.keep_last``), ``held`` is at most
the state (less where two entries are one tensor: after a whole number of chunks, the memory's weights and the
weights at its chunk's start). ``--out`` of a run of the library as it was before the copy (2026-11-29, commit
36f1dea: ``git worktree add OLD 36f1dea``, then this script with ``PYTHONPATH=OLD``) is
``benchmarks/results/state_storage_before.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import torch
from torch.utils._pytree import tree_leaves

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import table, write_results  # noqa: E402


def held_bytes(state) -> int:
    """Bytes of the distinct storages under a (nested) state."""
    storages = [t.untyped_storage() for t in tree_leaves(state) if isinstance(t, torch.Tensor)]
    return sum({s.data_ptr(): s.nbytes() for s in storages}.values())


def measure(variant: str, length: int) -> dict:
    from titans.models import TitansLM, small, state_nbytes

    torch.manual_seed(0)
    model = TitansLM(small(variant)).eval()
    with torch.no_grad():
        state = model(torch.randint(0, 256, (1, length))).state
    mib = 2 ** 20
    return {"variant": variant, "tokens": length, "state MiB": round(state_nbytes(state) / mib, 2),
            "held MiB": round(held_bytes(state) / mib, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="lmm,mac,mag,mal,swa,transformer")
    ap.add_argument("--lengths", default="1024,4096,16384", help="tokens of the one call, comma-separated")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/state_storage.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(v, int(n)) for v in args.variants.split(",") for n in args.lengths.split(",")]
    print(table(rows, ["variant", "tokens", "state MiB", "held MiB"]))
    write_results(args.out, {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                             "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
