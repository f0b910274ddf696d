"""``benchmarks/gpu_memory_op.py``'s choice of launch configurations (``tune``), with the timings faked: the fastest
forward and the fastest backward of the one-program-per-head kernels, or a forward in pieces (``chunk``'s backward
whatever the backward configuration) as a whole where its forward+backward is faster."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import gpu_memory_op as bench  # noqa: E402

from titans.ops.memory.triton_config import KernelConfig  # noqa: E402

F1, F2, B1, B2 = (KernelConfig.parse(t) for t in ("32,8,1,ieee", "16,8,1,ieee", "16,8,1,ieee,pre", "32,8,1,ieee"))
PIECE = KernelConfig.parse("32,8,1,tf32x3,maxreg,piece")


@pytest.mark.parametrize("piece_fwd_bwd,want", [(60.0, (F2, B1)), (70.0, (PIECE, B2))])
def test_tune_takes_the_fastest_path(monkeypatch, piece_fwd_bwd, want):
    # tokens/s: a: fwd 100, fwd+bwd 50 (backward 1/50 - 1/100 s per token); b: fwd 200, fwd+bwd 40; the best
    # forward is b's, the best backward a's: 1/200 + 1/100 = 1/66.7 s per token; pieces at 70 beat it, at 60 not
    timings = {"a": (100.0, 50.0), "b": (200.0, 40.0), "piece": (300.0, piece_fwd_bwd)}
    configs = {"a": (F1, B1), "b": (F2, B2), "piece": (PIECE, B2)}
    current, used = {}, []
    monkeypatch.setattr(bench, "candidates", lambda D, depth, chunk: configs)
    monkeypatch.setattr(bench, "RISKY", set())
    monkeypatch.setattr(bench, "check", lambda *a: 0.0)
    monkeypatch.setattr(bench, "fallbacks", lambda: [])
    monkeypatch.setattr(bench, "run_ours", lambda impl, B, T, H, D, depth, chunk, fwd_bwd: fwd_bwd)

    def use(D, depth, chunk, fc, bc):
        current["name"] = next(n for n, c in configs.items() if c == (fc, bc)) if (fc, bc) in configs.values() else None
        used.append((fc, bc))

    monkeypatch.setattr(bench, "use", use)
    monkeypatch.setattr(bench, "measure", lambda make, tokens, repeats: {"tok_s": timings[current["name"]][make()]})
    row = {}
    bench.tune(row, 1, 1, 8, 128, 2, 64, 1)
    assert set(row["candidates"]) == set(configs)
    assert used[-1] == want


def test_the_segments_of_calls_in_pieces(monkeypatch):
    """``segments``: a call in pieces (``triton_config.PIECE_FROM``: enough (batch row, head) pairs) runs its leading
    chunks in checkpointed segments where what it keeps passes ``triton_op.save_budget`` (on CPU 4 GiB: 16 GB at head
    dim 128, 2K, batch 64) and the trailing ones that fit as they are (``triton_op.piece_plan``), in one range within
    a budget that holds it, as one program per head does at fewer pairs."""
    import titans.ops.memory.triton_op as op

    # 32 chunks of 0.5 GB against 8 chunks' worth: 5 segments of 6 chunks, then the 2 that fit beside their starts
    assert bench.segments(64, 2048, 8, 128, 2, 64, device="cpu") == (6, 30 / 32)
    ranges, share = bench.segments(4, 32768, 8, 128, 2, 64, device="cpu")  # 32 pairs: one program per head
    assert ranges > 1 and share == 1.0
    monkeypatch.setattr(op, "SAVE_BUDGET_BYTES", 1 << 40)
    assert bench.segments(64, 2048, 8, 128, 2, 64, device="cpu") == (1, 0.0)
