"""``benchmarks/memory_scale.py``: the pre-LayerNorm scale it reports follows the forget gate's decay law."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import memory_scale  # noqa: E402

from titans.layers import NeuralMemory  # noqa: E402


@pytest.mark.parametrize("alpha", [0.01, 0.2])
def test_scale_of_a_linear_memory_that_only_forgets_decays_like_one_minus_alpha_to_the_t(alpha):
    # Gate projections zeroed: alpha_t = alpha exactly; no momentum and a negligible inner rate, so
    # W_t = (1 - alpha)^t W_0 and the linear memory's output scale is (1 - alpha)^t times its initial one.
    torch.manual_seed(0)
    layer = NeuralMemory(16, 2, depth=1, momentum=False, theta_max=1e-30, alpha_init=alpha, chunk_size=4).double()
    with torch.no_grad():
        layer.gates.weight.zero_()
    x = torch.randn(2, 22, 16, dtype=torch.float64)  # not a multiple of the chunk: the last piece is 2 tokens
    with torch.no_grad():
        s = memory_scale.pre_norm_scale(layer, x)
    ends = [0, 4, 8, 12, 16, 20, 22]
    assert len(s) == len(ends)
    a = float(torch.sigmoid(layer.gates.bias[-1].detach()))  # alpha_init as the (float32-initialized) bias holds it
    assert a == pytest.approx(alpha, rel=1e-6)
    want = torch.tensor([s[0] * (1 - a) ** t for t in ends], dtype=torch.float64)
    torch.testing.assert_close(torch.tensor(s, dtype=torch.float64), want, rtol=1e-12, atol=0)


def test_main_writes_the_table_and_json(tmp_path, capsys):
    out = tmp_path / "scale.json"
    memory_scale.main(["--alphas", "0.01,0.001", "--tokens", "64", "--grad-lengths", "32,64", "--d-model", "16",
                       "--heads", "2", "--batch", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert "alpha_init 0.001" in text and "Norm of the gradient" in text
    assert set(json.loads(out.read_text())["grad_norm"]["0.001"]) == {"32", "64"}
    with pytest.raises(SystemExit):
        memory_scale.main(["--tokens", "64", "--grad-lengths", "128", "--out", str(out)])
