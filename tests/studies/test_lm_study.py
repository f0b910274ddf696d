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
    capsys.readouterr()
    with pytest.raises(SystemExit):  # another seed in the same folder: not reported as the finished run
        main(base + ["--long", "2048", "--seed", "1"])
    assert "train.seed=1337, not 1" in capsys.readouterr().err


def test_seq_len_keeps_the_step_tokens_and_one_length_per_folder(tmp_path):
    import json

    from titans.studies.lm import STEP_TOKENS, run_config

    cfg = run_config("swa", 2, str(tmp_path), 0, seq_len=512)
    assert cfg.data.seq_len == 512 and cfg.train.batch_size * 512 == STEP_TOKENS
    with pytest.raises(ValueError, match="seq_len=300"):
        run_config("swa", 2, str(tmp_path), 0, seq_len=300)
    out = str(tmp_path / "s")
    main(["--variants", "swa", "--steps", "2", "--eval-windows", "1", "--seq-len", "512", "--out", out])
    res = json.loads((tmp_path / "s" / "results.json").read_text())["swa"]
    assert res["seq_len"] == 512 and res["tokens"] == 2 * STEP_TOKENS
    assert "val bpb @ 512 | val bpb @ 2048 (streamed)" in (tmp_path / "s" / "results.md").read_text()
    for bad in (["--seq-len", "300"], ["--seq-len", "256"], ["--seq-len", "512", "--long", "512"]):
        with pytest.raises(SystemExit):  # not a divisor; another length in the same folder; --long not past it
            main(["--variants", "swa", "--steps", "2", "--eval-windows", "1", "--out", out] + bad)
