"""The long-context studies run end to end on a tiny budget, resume, and reject bad model names up front."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from titans.studies.longctx import main, named_model


def test_named_models():
    assert named_model("lmm-linear").memory.depth == 1
    with pytest.raises(ValueError, match="no persistent"):
        named_model("lmm-nopersist")
    assert named_model("mac-nopersist").n_persistent == 0
    assert named_model("mac-noforget").memory.forgetting is False
    assert named_model("lmm-slowforget").memory.alpha_init == 1e-3
    with pytest.raises(ValueError, match="mac-bogus"):
        named_model("mac-bogus")


def test_niah_study_tiny(tmp_path, capsys):
    out = str(tmp_path / "s")
    argv = ["--steps", "2", "--samples", "1", "--lengths", "256,512", "--long", "", "--variants",
            "transformer,mac-noconv", "--out", out]
    main(argv, which="niah")
    res = json.loads(Path(os.path.join(out, "results.json")).read_text())
    assert set(res) == {"transformer", "mac-noconv"}
    assert set(res["mac-noconv"]["accuracy"]) == {"256", "512"}
    assert os.path.exists(os.path.join(out, "accuracy.png"))
    main(argv, which="niah")  # finished: nothing retrains, the same table
    assert capsys.readouterr().out.count("| mac-noconv |") == 2


def test_mqar_study_tiny(tmp_path):
    out = str(tmp_path / "m")
    main(["--steps", "2", "--samples", "1", "--depths", "1", "--pairs", "8", "--eval-pairs", "4,8", "--out", out],
         which="mqar")
    res = json.loads(Path(os.path.join(out, "results.json")).read_text())
    assert set(res["lmm-depth1"]["accuracy"]) == {"4", "8"}
    main(["--steps", "2", "--samples", "1", "--depths", "2", "--pairs", "8", "--eval-pairs", "8", "--ablation",
          "slowforget", "--out", out], which="mqar")
    res = json.loads(Path(os.path.join(out, "results.json")).read_text())
    assert set(res) == {"lmm-depth1", "lmm-depth2-slowforget"}
