"""The long-context runner: streamed answers equal one-shot computation, reports are written, runs resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from titans.cli import main
from titans.data import ByteTokenizer
from titans.eval import answer_batch
from titans.eval.longctx import parse_lengths, run
from titans.models import TitansLM
from titans.models.presets import tiny
from titans.train import RunConfig, apply_overrides
from titans.train.config import DataConfig

VARIANTS = ["lmm", "mac", "mag", "mal", "swa", "transformer"]


def test_parse_lengths():
    assert parse_lengths("1k,256,64K,1m,256") == [256, 1024, 65536, 1048576]
    with pytest.raises(ValueError, match="'x'"):
        parse_lengths("256,x")


@pytest.mark.parametrize("variant", VARIANTS)
def test_streamed_answers_equal_one_shot(variant):
    """Log-likelihood and greedy tokens from the streamed prompt == one forward over prompt + answer, and the
    model's own greedy decoding of the whole prompt (float64, pieces that cut segments and chunks)."""
    model = TitansLM(tiny(variant)).double().eval()
    prompts = torch.randint(0, 256, (2, 45))
    answers = [[5, 6, 7], [9]]
    gen, logprob, nbytes = answer_batch(model, prompts, answers, piece=7, extra=1)
    assert gen.shape == (2, 4) and nbytes > 0
    for i, a in enumerate(answers):
        full = torch.cat([prompts[i], torch.tensor(a)])[None]
        with torch.no_grad():
            logp = model(full).logits.log_softmax(-1)[0, 44:44 + len(a)]
        ref = logp.gather(-1, torch.tensor(a)[:, None]).sum()
        assert abs(float(logprob[i]) - float(ref)) < 1e-9
    ref_gen, _ = model.generate(prompts, 4, temperature=0)
    assert torch.equal(gen, ref_gen[:, 45:])


def _cfg(task, seq_len, variant="mac"):
    cfg = RunConfig(model=tiny(variant), data=DataConfig(seq_len=seq_len, task=task))
    return apply_overrides(cfg, [])


def test_niah_run_writes_reports_and_resumes(tmp_path):
    model = TitansLM(tiny("mac")).eval()
    cfg, out, logs = _cfg("niah:passkey", 128), str(tmp_path / "niah"), []
    res = run("niah", model, cfg, "ckpt", out=out, lengths=[128, 300], depths=[0.0, 1.0], kinds=["passkey"],
              samples=2, batch=3, log=logs.append)
    data = json.loads(Path(os.path.join(out, "results.json")).read_text())
    assert len(data["records"]) == 2 * 2 * 2 and {r["length"] for r in data["records"]} == {128, 300}
    assert set(data["meta"]["peak_rss_mib"]) == {"128", "300"}
    assert all(r["answer"].isdigit() and len(r["answer"]) == 5 for r in data["records"])
    assert [s["n"] for s in res["summary"]] == [4, 4]
    assert os.path.exists(os.path.join(out, "heatmap_passkey.png")) and "passkey" in res["markdown"]
    logs.clear()  # a second run with one more length computes only that length
    run("niah", model, cfg, "ckpt", out=out, lengths=[128, 300, 400], depths=[0.0, 1.0], kinds=["passkey"],
        samples=2, batch=3, log=logs.append)
    assert len(logs) == 1 and "length 400" in logs[0]
    with pytest.raises(ValueError, match="another evaluation"):
        run("niah", model, cfg, "ckpt", out=out, lengths=[128], samples=3, log=logs.append)


def test_babilong_and_mqar_runs(tmp_path):
    model = TitansLM(tiny("lmm")).eval()
    res = run("babilong", model, _cfg("babilong", 512), "ckpt", out=str(tmp_path / "b"), lengths=[512],
              kinds=["qa1", "qa2"], samples=2, log=lambda s: None)
    assert {s["kind"] for s in res["summary"]} == {"qa1", "qa2"}
    assert os.path.exists(str(tmp_path / "b" / "heatmap_babilong.png"))
    res = run("mqar", model, _cfg("mqar:8", 64), "ckpt", out=str(tmp_path / "m"), pairs=[4, 8], samples=2,
              log=lambda s: None)
    assert [s["pairs"] for s in res["summary"]] == [4, 8] and all(0 <= s["accuracy"] <= 1 for s in res["summary"])


def test_oracle_scores_one(tmp_path):
    """A model that always predicts the next token of a known stream answers every instance exactly."""
    from titans.data.synthetic import make_niah

    tok = ByteTokenizer()
    ex = make_niah("passkey", length=200, depth=0.5, seed=0, tokenizer=tok)
    stream = torch.tensor(ex.tokens + ex.answer_tokens + tok.encode(". "))

    class Oracle(torch.nn.Module):
        def forward(self, idx, state=None):
            pos = 0 if state is None else state
            nxt = stream[pos + 1:pos + 1 + idx.shape[1]]
            logits = torch.full((1, idx.shape[1], 256), -30.0)
            logits[0, torch.arange(len(nxt)), nxt] = 30.0
            return type("Out", (), {"logits": logits, "state": pos + idx.shape[1]})

    gen, logprob, _ = answer_batch(Oracle(), torch.tensor([ex.tokens]), [ex.answer_tokens], piece=64)
    assert tok.decode(gen[0].tolist()).startswith(ex.answer) and float(logprob[0]) > -1e-6


def test_cli_eval_task_end_to_end(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    main(["train", "--preset", "tiny", "--out-dir", run_dir, "--quiet", "--set", "data.task='niah:passkey'",
          "--set", "data.seq_len=128", "--set", "train.max_steps=2", "--set", "train.eval_batches=1"])
    log = Path(run_dir, "log.csv").read_text()
    assert ",val," in log
    main(["eval", "niah", "--ckpt", run_dir, "--lengths", "128,256", "--depths", "0.5", "--samples", "1",
          "--kinds", "passkey"])
    out = capsys.readouterr().out
    assert "| passkey |" in out and os.path.exists(os.path.join(run_dir, "eval_niah", "results.json"))
    with pytest.raises(SystemExit) as e:
        main(["eval", "niah", "--help"])
    assert e.value.code == 0 and "--depths" in capsys.readouterr().out
