"""The commonsense benchmarks as multiple choice: each task's rows in lm-eval-harness's zero-shot formats, read
from the package's layout (a stand-in, ``tests/commonsense_data.py``), and clear errors."""

from __future__ import annotations

import pytest

from titans.data.commonsense import TASKS, Doc, data_root, load_task

pytest.importorskip("pyarrow")
from tests.commonsense_data import write_root  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_root(tmp_path_factory.mktemp("olmo_eval"))


def test_each_task_in_its_zero_shot_format(root):
    got = {t: load_task(t, root) for t in TASKS}
    q = "Question: Dry a wet towel.\nAnswer:"
    assert got["piqa"] == [Doc((q, q), (" Hang it in the sun.", " Put it in a pond."), 0)]
    # ctx_b capitalized; lm-eval's " [title]" -> ". ", the other bracketed markers out
    ctx = "Cooking: A man cuts onions. He"
    assert got["hellaswag"] == [Doc((ctx,) * 4, (" fries them.. Done", " cries.", " sings.", " sleeps."), 1)]
    rest = " was thirsty."  # partial scoring: the options complete the context, the rest is shared
    assert got["winogrande"] == [Doc(("Ann gave Bo a cup because Ann", "Ann gave Bo a cup because Bo"),
                                     (rest, rest), 1)]
    q = "Question: What melts ice?\nAnswer:"
    assert got["arc_easy"] == [Doc((q, q), (" heat", " cold"), 0)]
    assert got["arc_challenge"][0].label == 1 and got["arc_challenge"][0].continuations[1] == " steam"
    q = "Q: Kim lost her keys. How does Kim feel?\nA:"
    assert got["siqa"] == [Doc((q,) * 3, (" upset", " sleepy", " tall"), 0)]
    assert [d.label for d in got["boolq"]] == [1, 0]
    assert got["boolq"][0] == Doc(("Water is a liquid.\nQuestion: is water wet?\nAnswer:",) * 2, (" no", " yes"), 1)
    assert got["lambada"] == [Doc(("She opened the door and saw the",), (" sea",), 0),
                              Doc(("He drank a cup of",), (" tea",), 0)]
    assert load_task("boolq", root, limit=1) == got["boolq"][:1]


def test_clear_errors(root, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="task='copa': expected one of lambada, piqa"):
        load_task("copa", root)
    with pytest.raises(ValueError, match="limit=0: must be >= 1"):
        load_task("piqa", root, limit=0)
    with pytest.raises(FileNotFoundError, match="no hf_datasets folder"):
        data_root(str(tmp_path))
    monkeypatch.setenv("TITANS_COMMONSENSE_DIR", root)
    assert data_root() == root
    monkeypatch.delenv("TITANS_COMMONSENSE_DIR")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="make commonsense-data"):
        data_root()
