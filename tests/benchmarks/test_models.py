"""``benchmarks/models.py``: each section keeps the machine and day it ran on; bad sections and files fail first."""

import datetime
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import models  # noqa: E402


def test_an_unknown_section_is_named_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match=r"--sections: unknown \['strem'\]"):
        models.main(["--sections", "strem", "--out", str(tmp_path / "m.json")])
    assert not (tmp_path / "m.json").exists()


def test_a_file_with_one_machine_for_all_sections_is_refused(tmp_path):
    out = tmp_path / "m.json"
    out.write_text(json.dumps({"machine": {"platform": "x"}, "train": []}))
    with pytest.raises(SystemExit, match="one 'machine' for all its sections"):
        models.main(["--sections", "stream", "--out", str(out)])
    assert json.loads(out.read_text()) == {"machine": {"platform": "x"}, "train": []}


def test_a_rerun_of_one_section_keeps_the_others_and_their_machine(tmp_path):
    out = tmp_path / "m.json"
    old = {"platform": "old-kernel", "threads": 2, "cpus": 2, "date": "2026-01-01"}
    train = [{"task": "train", "variant": "lmm", "tokens_per_s": 1.0}]
    out.write_text(json.dumps({"machines": {"train": old, "stream": old}, "train": train}))
    models.main(["--sections", "stream", "--stream-tokens", "2048", "--threads", "1", "--out", str(out)])
    got = json.loads(out.read_text())
    assert got["train"] == train and got["machines"]["train"] == old
    here = got["machines"]["stream"]
    assert here["date"] == datetime.date.today().isoformat() and here["threads"] == 1
    assert [r["variant"] for r in got["stream"]] == ["lmm", "mac"]
    assert all(r["tokens"] == 2048 for r in got["stream"])
