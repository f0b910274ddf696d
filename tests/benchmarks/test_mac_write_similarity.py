"""``benchmarks/mac_write_similarity.py``: the cosine it reports, on vectors whose answer is known, and its run."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import mac_write_similarity as mws  # noqa: E402

from titans.models import TitansLM, tiny  # noqa: E402


def test_mean_offdiag_cosine_on_known_vectors():
    same = torch.randn(1, 1, 8).expand(2, 5, 8)
    assert mws.mean_offdiag_cosine(same) == pytest.approx(1.0)
    assert mws.mean_offdiag_cosine(torch.eye(6).unsqueeze(0)) == pytest.approx(0.0)
    pair = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # 45 degrees apart
    assert mws.mean_offdiag_cosine(pair) == pytest.approx(2 ** -0.5)


def test_write_similarity_reads_every_block_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = TitansLM(tiny("mac")).eval()
    idx = torch.randint(0, 256, (2, 40))  # 2 full segments of 16 and a piece of 8, which is left out
    ref = model(idx).logits
    rows = mws.write_similarity(model, idx)
    assert [r["block"] for r in rows] == [0, 1]
    assert all(-1 <= r[k] <= 1 for r in rows for k in ("cos x (input)", "cos y (attention output)"))
    assert torch.equal(model(idx).logits, ref) and "attend" not in vars(model.blocks[0].attn)


def test_main_writes_json(tmp_path):
    out = tmp_path / "r.json"
    mws.main(["--seq-len", "128", "--batch", "2", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 and rows[0]["model"] == "mac-slowforget (initialization)"
    with pytest.raises(SystemExit, match="no checkpoint"):
        mws.main(["--ckpt", str(tmp_path), "--out", str(out)])
