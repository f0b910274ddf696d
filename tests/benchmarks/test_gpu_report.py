"""``benchmarks/_gpu_report.py``'s table of tuning candidates from a saved run (no GPU needed)."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import _gpu_report  # noqa: E402

KEY = [False, 2, 64, 128, 512, 128]
BKEY = [True, 2, 64, 128, 512, 128]


def test_candidates_list_each_kernels_registers_and_the_piece_launches():
    run = {"rows": [{"D": 128, "depth": 2, "chunk": 64, "T": 2048, "candidates": {
        "default": {"fwd": "32,8,1,tf32x3", "bwd": "16,8,1,ieee", "max_rel_err": 8.8e-7, "fwd tok_s": 4.02e5,
                    "fwd+bwd tok_s": 9.4e4},
        "piece": {"fwd": "32,8,1,tf32x3,maxreg,piece", "bwd": "16,8,1,ieee", "max_rel_err": 1e-7,
                  "fwd tok_s": 1e6, "fwd+bwd tok_s": 3e5}}}],
        "kernels": [{"key": KEY, "config": "32,8,1,tf32x3", "regs": 255, "spills": 1402, "narrow tf32": True},
                    {"key": BKEY, "config": "16,8,1,ieee", "regs": 255, "spills": 1164},
                    {"key": KEY, "config": "32,8,1,tf32x3,maxreg,piece", "part": "keys", "regs": 174, "spills": 0},
                    {"key": KEY, "config": "32,8,1,tf32x3,maxreg,piece", "part": "tiles", "regs": 255,
                     "spills": 812}]}
    lines = _gpu_report.candidates_table([("run.json", run)])
    assert lines[-2] == ("| 128 | 2 | 64 | 2048 | default | 32,8,1,tf32x3 (255 / 1402; ran ieee) | 16,8,1,ieee "
                         "(255 / 1164) | 8.8e-07 | 402 | 94 |")
    assert lines[-1] == ("| 128 | 2 | 64 | 2048 | piece | 32,8,1,tf32x3,maxreg,piece (keys 174 / 0, tiles 255 / 812) "
                         "| chunk's (piece.piece_backward) | 1.0e-07 | 1,000 | 300 |")


def test_the_table_gives_the_ratio_timed_in_turn_beside_the_ratio_of_medians(tmp_path):
    run = {"device": "NVIDIA H200", "torch": "2.11", "heads": 8, "tokens": 131072,
           "ceilings": {"copy_GBps": 4000.0, "bf16_matmul_TFLOPs": 700.0},
           "rows": [{"D": 128, "depth": 2, "chunk": 64, "T": 8192, "B": 16, "max_rel_err": 3e-7,
                     "chunk fwd tok_s": 5.88e5, "triton fwd tok_s": 1.085e6, "triton/chunk fwd": 1.845,
                     "chunk fwd+bwd tok_s": 1.59e5, "triton fwd+bwd tok_s": 1.98e5, "triton/chunk fwd+bwd": 1.245,
                     "triton/chunk fwd+bwd paired ratio": 1.031, "triton/chunk fwd+bwd paired rounds": 3}]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    lines = _gpu_report.report([str(path)]).splitlines()
    fwd, both = (next(x for x in lines if x.startswith("| 128 |") and f"| {p} |" in x) for p in ("fwd", "fwd+bwd"))
    assert fwd.endswith("| 1.84 | – |")
    assert both.endswith("| 1.25 (in turn 1.03) | – |")
