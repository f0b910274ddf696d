"""``benchmarks/scaling.py``: one measurement, the whole run on tiny sizes (its JSON, ratios and plot), bad input."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import scaling  # noqa: E402


def test_one_step_counts_the_batch_it_ran():
    r = scaling.train_step({"variant": "mal", "depth": 1, "length": 32, "tokens": 64, "threads": 1, "repeats": 1})
    assert r["batch"] == 2 and r["tokens_per_s"] > 0 and r["params_m"] > 0
    r = scaling.train_step({"variant": "lmm", "length": 48, "tokens": 64, "batch": 1, "threads": 1, "repeats": 1})
    assert r["batch"] == 1  # a fixed batch: the length need not divide the tokens


def test_model_config_varies_the_memory_depth_only():
    a, b = scaling.model_config("lmm", 1), scaling.model_config("lmm", 3)
    assert (a.memory.depth, b.memory.depth) == (1, 3) and a.d_model == b.d_model == 128


def test_main_writes_json_with_ratios_and_a_plot(tmp_path):
    out = tmp_path / "s.json"
    res = scaling.main(["--lengths", "16,32", "--tokens", "32", "--depths", "1", "--variants", "swa",
                        "--repeats", "1", "--threads", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == res and [r["length"] for r in saved["depth"]] == [16, 32] and len(saved["variants"]) == 2
    assert all("error" not in r for r in saved["depth"] + saved["variants"])
    assert saved["depth"][0]["vs_shortest"] == 1.0 and saved["depth"][1]["batch"] == 1
    assert (tmp_path / "s.png").exists()


@pytest.mark.parametrize("argv, match", [(["--lengths", "48"], "divide --tokens"),
                                         (["--sections", "speed"], "unknown"),
                                         (["--variants", "gpt"], "not among"),
                                         (["--depths", "0"], ">= 1"),
                                         (["--lengths", "a"], "integers"),
                                         (["--batch", "0"], "--batch 0")])
def test_bad_input_is_named(argv, match, tmp_path):
    with pytest.raises(SystemExit, match=match):
        scaling.main(argv + ["--out", str(tmp_path / "x.json")])
