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
    # Another seed into the same folder is another run: an error naming the field, not the old run reused as it.
    with pytest.raises(SystemExit):
        main(argv + ["--seed", "1"], which="niah")
    assert "train.seed=1337, not 1" in capsys.readouterr().err


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


def test_babilong_study_tiny(tmp_path, capsys):
    """One model per variant on the qa1+qa2 mixture; accuracy per length overall and per task."""
    out = str(tmp_path / "b")
    main(["--task", "babilong:qa1,qa2", "--seq-len", "512", "--batch", "1", "--steps", "2", "--samples", "1",
          "--lengths", "512,1k", "--long", "", "--variants", "lmm", "--out", out], which="niah")
    res = json.loads(Path(os.path.join(out, "results.json")).read_text())["lmm"]
    assert set(res["accuracy"]) == {"512", "1024"} and set(res["by_kind"]) == {"qa1", "qa2"}
    for n in ("512", "1024"):  # the overall cell is the mean of the per-task cells (equal counts)
        per_task = [res["by_kind"][k]["accuracy"][n] for k in ("qa1", "qa2")]
        assert res["accuracy"][n] == pytest.approx(sum(per_task) / 2)
    assert "| lmm, qa2 |" in capsys.readouterr().out


def test_study_rejects_bad_task_before_training(tmp_path):
    with pytest.raises(ValueError, match="mqar"):
        main(["--task", "mqar:8", "--out", str(tmp_path / "x")], which="niah")
    with pytest.raises(ValueError, match="qa9"):
        main(["--task", "babilong:qa9", "--out", str(tmp_path / "x")], which="niah")
    with pytest.raises(ValueError, match="data.seq_len=256: too short for task 'niah:uuid'"):
        main(["--task", "niah:uuid", "--seq-len", "256", "--out", str(tmp_path / "x")], which="niah")
    assert not os.path.exists(tmp_path / "x")
