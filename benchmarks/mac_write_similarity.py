"""How alike MAC's memory writes are within a segment: the attention output against the block input (CPU; seconds).

    python benchmarks/mac_write_similarity.py                         # the S-NIAH study's MAC at initialization
    python benchmarks/mac_write_similarity.py --ckpt runs/study_niah/mac-slowforget   # and a trained run (any number)

MAC writes its memory with the attention output ``y`` of each segment (paper Eq. 24); with ``mac_write="input"``
(ablation ``-inputwrite``) with the block's normalized input ``x`` instead. An associative memory can only tell
apart what it is written with: keys that point the same way share one slot. This measures, on S-NIAH-1 training
instances, the mean cosine similarity between the vectors of two different tokens of one segment, for ``x`` and
``y`` in every MAC block (1 = all tokens alike; about 0 for unrelated vectors). The memory's keys are projections of
these vectors, so what is alike here is alike there.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import table, write_results  # noqa: E402

from titans.data import get_tokenizer  # noqa: E402
from titans.data.synthetic.tasks import task_batch  # noqa: E402
from titans.models import TitansLM  # noqa: E402
from titans.studies.longctx import named_model  # noqa: E402
from titans.train import CheckpointError, load_model  # noqa: E402


def mean_offdiag_cosine(z: torch.Tensor) -> float:
    """Mean cosine similarity over pairs of different tokens of ``z [B, n, d]``, averaged over the batch."""
    z = F.normalize(z.double(), dim=-1)
    c = z @ z.transpose(1, 2)
    n = c.shape[1]
    return ((c.sum((1, 2)) - c.diagonal(dim1=1, dim2=2).sum(-1)) / (n * n - n)).mean().item()


@torch.no_grad()
def write_similarity(model: TitansLM, idx: torch.Tensor) -> list[dict]:
    """Per MAC block and segment source (``x``: the normalized block input, ``y``: the attention output), the mean
    within-segment cosine over the full segments of ``idx [B, T]``."""
    xs, ys, handles = {}, {i: [] for i in range(len(model.blocks))}, []
    for i, block in enumerate(model.blocks):
        handles.append(block.norm1.register_forward_hook(lambda m, inp, out, _i=i: xs.__setitem__(_i, out)))

        def spy(*a, _attend=block.attn.attend, _i=i, **kw):  # the attention output of each segment piece
            y = _attend(*a, **kw)
            ys[_i].append(y)
            return y

        block.attn.attend = spy  # an instance attribute over the class's method, deleted afterwards
    try:
        model(idx)
    finally:
        for h in handles:
            h.remove()
        for block in model.blocks:
            del block.attn.attend
    C = model.cfg.segment_len
    rows = []
    for i in range(len(model.blocks)):
        segments = [xs[i][:, a:a + C] for a in range(0, idx.shape[1] - C + 1, C)]
        full = [y for y in ys[i] if y.shape[1] == C]
        rows.append({"block": i, "cos x (input)": sum(map(mean_offdiag_cosine, segments)) / len(segments),
                     "cos y (attention output)": sum(map(mean_offdiag_cosine, full)) / len(full)})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mac-slowforget", help="a study model name (at initialization)")
    ap.add_argument("--ckpt", nargs="*", default=[], help="trained run folders (their latest checkpoint)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "mac_write_similarity.json"))
    args = ap.parse_args(argv)
    cfg = named_model(args.model)
    if cfg.variant != "mac":
        raise SystemExit(f"--model {args.model!r}: not a MAC model")
    torch.manual_seed(args.seed)
    models = [(f"{args.model} (initialization)", TitansLM(cfg))]
    for run in args.ckpt:
        try:
            model = load_model(run)[0]  # a run folder's latest checkpoint, or a checkpoint folder
        except CheckpointError as e:
            raise SystemExit(f"--ckpt {run!r}: {e}") from None
        if model.cfg.variant != "mac":
            raise SystemExit(f"--ckpt {run!r}: a {model.cfg.variant} model, not MAC")
        models.append((run.rstrip("/").split("/")[-1] + " (trained)", model))
    idx, _ = task_batch("niah:passkey", seq_len=args.seq_len, batch_size=args.batch, seed=args.seed, step=0,
                        tokenizer=get_tokenizer("byte"))
    rows = []
    for name, model in models:
        rows += [{"model": name, **r} for r in write_similarity(model.eval(), idx)]
    print(table(rows, ["model", "block", "cos x (input)", "cos y (attention output)"]))
    write_results(args.out, {"config": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows})


if __name__ == "__main__":
    main()
