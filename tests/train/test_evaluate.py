"""``evaluate_split``: streamed windows equal one call, and the loss by position adds up to the loss."""

import math

import numpy as np
import pytest
import torch

from titans.models import ModelConfig, TitansLM
from titans.train import evaluate_split


def _model(variant):
    torch.manual_seed(0)
    cfg = ModelConfig(variant=variant, vocab_size=32, d_model=32, n_layers=1, n_heads=2, window=16, segment_len=16,
                      n_persistent=2)
    return TitansLM(cfg).double()


TOKENS = np.random.default_rng(0).integers(0, 32, 700)


@pytest.mark.parametrize("variant", ["lmm", "mac", "transformer"])
def test_streamed_equals_one_call(variant):
    model = _model(variant)
    one = evaluate_split(model, TOKENS, length=96, max_windows=5, batch=2)
    streamed = evaluate_split(model, TOKENS, length=96, max_windows=5, batch=2, piece=40)
    assert one["tokens"] == streamed["tokens"] == 5 * 96
    assert math.isclose(one["loss"], streamed["loss"], rel_tol=1e-10)


def test_loss_by_position_adds_up():
    model = _model("lmm")
    res = evaluate_split(model, TOKENS, length=96, max_windows=5, batch=2, piece=32, positions=4,
                         bytes_per_token=2.0)
    spans = res["by_position"]
    assert [(s["start"], s["end"]) for s in spans] == [(0, 24), (24, 48), (48, 72), (72, 96)]
    assert math.isclose(sum(s["loss"] for s in spans) / 4, res["loss"], rel_tol=1e-10)
    assert all(math.isclose(s["bpb"], s["loss"] / math.log(2) / 2.0) for s in spans)
    plain = evaluate_split(model, TOKENS, length=96, max_windows=5, batch=2, piece=32)
    assert math.isclose(plain["loss"], res["loss"], rel_tol=1e-10) and "by_position" not in plain
    uneven = evaluate_split(model, TOKENS, length=96, max_windows=5, positions=5)["by_position"]
    assert [s["end"] - s["start"] for s in uneven] == [19, 19, 20, 19, 19]
    with pytest.raises(ValueError, match="positions=0"):
        evaluate_split(model, TOKENS, length=96, positions=0)
