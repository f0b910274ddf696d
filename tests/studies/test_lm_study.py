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
