import json
import os
from pathlib import Path

import pytest

from titans.atomic import write_bytes, write_json, write_text


def test_writes_and_overwrites(tmp_path):
    p = str(tmp_path / "r.json")
    assert write_json(p, {"a": 1}) == p
    assert json.loads(Path(p).read_text()) == {"a": 1}
    write_json(p, [1, 2], indent=None)
    assert Path(p).read_text() == "[1, 2]"
    write_text(p, "é\n")
    assert Path(p).read_text(encoding="utf-8") == "é\n"
    write_bytes(p, b"\x00\x01")
    assert Path(p).read_bytes() == b"\x00\x01"
    assert os.listdir(tmp_path) == ["r.json"]  # no temporary file left behind


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    p = str(tmp_path / "r.json")
    write_json(p, {"a": 1})
    with pytest.raises(TypeError):
        write_json(p, {"a": object()})  # not serializable: fails before anything is written
    target = tmp_path / "d"
    target.mkdir()
    (target / "x").write_text("keep")
    with pytest.raises(OSError):
        write_text(str(target), "text")  # the rename onto a non-empty folder fails after the temporary is written
    assert json.loads(Path(p).read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["d", "r.json"]
