"""The MAD study runs end to end on a tiny budget, reuses finished models, and rejects bad input up front."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from titans.studies.mad import main


def test_mad_study_tiny(tmp_path, capsys):
    out = str(tmp_path / "mad")
    argv = ["--steps", "2", "--test", "8", "--tasks", "memorize,selective_copy", "--variants", "swa", "--out", out]
    main(argv)
    res = json.loads(Path(os.path.join(out, "results.json")).read_text())
    assert list(res) == ["selective_copy", "memorize"]  # the tasks' own order
    r = res["memorize"]["swa"]
    assert r["seq_len"] == 32 and r["batch"] == 64 and r["test_instances"] == 64 and 0 <= r["accuracy"] <= 1
    assert os.path.exists(os.path.join(out, "accuracy.png")) and "| swa |" in Path(out, "results.md").read_text()
    mtime = os.path.getmtime(os.path.join(out, "memorize", "swa", "result.json"))
    main(argv)  # finished: reused, not retrained or rescored
    assert os.path.getmtime(os.path.join(out, "memorize", "swa", "result.json")) == mtime
    # A second process's task in the same folder joins the table.
    main(["--steps", "2", "--test", "8", "--tasks", "recall", "--variants", "swa", "--out", out])
    assert list(json.loads(Path(os.path.join(out, "results.json")).read_text())) == ["recall", "selective_copy",
                                                                                     "memorize"]
    capsys.readouterr()
    with pytest.raises(SystemExit):  # another seed into the same folder: an error, not the old run reused
        main(argv + ["--seed", "1"])
    assert "train.seed=1337, not 1" in capsys.readouterr().err


@pytest.mark.parametrize("argv,err", [(["--tasks", "copy"], "--tasks: unknown ['copy']"),
                                      (["--variants", "mac-bogus"], "mac-bogus"),
                                      (["--steps", "0"], "--steps 0")])
def test_mad_study_bad_input(tmp_path, capsys, argv, err):
    with pytest.raises(SystemExit):
        main(argv + ["--out", str(tmp_path)])
    assert err in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # nothing trained
