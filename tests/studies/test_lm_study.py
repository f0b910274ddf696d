"""``titans study lm``'s model names: the variants matched to MAC's size, optionally with an ablation."""

import pytest

from titans.models import STUDY_ALPHA_INIT
from titans.studies.lm import main, named_config


def test_named_configs():
    assert named_config("lmm").memory.alpha_init == STUDY_ALPHA_INIT  # as the committed tables were trained
    slow = named_config("mac-slowforget")
    assert slow.memory.alpha_init == 1e-3 and slow.d_model == named_config("mac").d_model


def test_bad_variant_fails_before_training(tmp_path):
    with pytest.raises(SystemExit):
        main(["--variants", "mac,swa-noconv", "--out", str(tmp_path)])
    assert not (tmp_path / "mac").exists()


def test_long_lengths_evaluate_once_and_extend(tmp_path, capsys):
    import json

    out = str(tmp_path / "s")
    base = ["--variants", "lmm-linear-slowforget", "--steps", "2", "--eval-windows", "1", "--out", out]
    main(base + ["--long", "2048"])
    res = json.loads((tmp_path / "s" / "results.json").read_text())["lmm-linear-slowforget"]
    assert res["config"]["memory"]["depth"] == 1 and res["config"]["memory"]["alpha_init"] == 1e-3
    assert list(res["val_bpb_long"]) == ["2048"] and res["val_bpb_long"]["2048"] > 0
    # The same command again adds only the missing length, and trains nothing.
    main(base + ["--long", "2048,4096"])
    again = json.loads((tmp_path / "s" / "results.json").read_text())["lmm-linear-slowforget"]
    assert again["val_bpb_long"]["2048"] == res["val_bpb_long"]["2048"] and "4096" in again["val_bpb_long"]
    assert again["val_bpb_1x"] == res["val_bpb_1x"] and again["train_tokens_per_s"] == res["train_tokens_per_s"]
    table = (tmp_path / "s" / "results.md").read_text()
    assert "@ 2,048 |" in table and "@ 4,096 |" in table
    with pytest.raises(SystemExit):
        main(base + ["--long", "128"])
