"""``benchmarks/memory_drift.py``: the rows it reports while streaming a model, for every memory-carrying variant."""

import math
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import memory_drift  # noqa: E402

from titans.models import ModelConfig, TitansLM  # noqa: E402


@pytest.mark.parametrize("variant", ["lmm", "mac", "mag", "mal"])
def test_rows_at_powers_of_two_for_every_memory_layer(variant):
    torch.manual_seed(0)
    model = TitansLM(ModelConfig(variant=variant, vocab_size=32, d_model=32, n_layers=2, n_heads=2, window=8,
                                 segment_len=8, n_persistent=2)).eval()
    tokens = np.random.default_rng(0).integers(0, 32, 16 * 6 + 1)
    rows = memory_drift.drift(model, tokens, 16, bytes_per_token=1.0)
    assert [r["t"] for r in rows] == [16, 32, 64, 96]  # powers of two times the piece, and the last
    for r in rows:
        assert math.isfinite(r["bpb"]) and r["bpb"] > 0
        for i in range(2):  # one memory per block
            assert r[f"W{i}"] > 0 and r[f"S{i}"] >= 0 and 0 < r[f"alpha{i}"] < 1
    assert not any(m._forward_hooks for m in model.modules())  # the gate hooks are removed


def test_the_weight_ratio_follows_forgetting_when_nothing_is_written():
    # theta = 0 (no writes) and alpha fixed by zeroed gate projections: |W| / |W_0| = (1 - alpha)^t exactly.
    torch.manual_seed(0)
    model = TitansLM(ModelConfig(variant="lmm", vocab_size=32, d_model=32, n_layers=1, n_heads=2)).double().eval()
    mem = next(m for m in model.modules() if isinstance(m, memory_drift.NeuralMemory))
    with torch.no_grad():
        mem.gates.weight.zero_()
        mem.theta_scale.zero_()
    alpha = float(torch.sigmoid(mem.gates.bias[-1].detach()))
    rows = memory_drift.drift(model, np.random.default_rng(1).integers(0, 32, 65), 16)
    for r in rows:
        assert r["W0"] == pytest.approx((1 - alpha) ** r["t"], rel=1e-9) and r["S0"] == 0
