"""Training: loss falls, resume is bit-identical (also after SIGKILL), bad checkpoints are rejected, DDP and FSDP2
match one process."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from titans.train import CheckpointError, apply_overrides, latest_checkpoint, load_checkpoint, load_model, train
from titans.train.checkpoint import check_same_run
from titans.train.config import preset_tiny

from ..text_corpus import write_corpus


def _cfg(tmp_path, **over):
    corpus = write_corpus(str(tmp_path / "corpus"))
    cfg = preset_tiny()
    items = [f"data.corpus={corpus!r}", f"data.data_dir={str(tmp_path / 'data')!r}",
             f"train.out_dir={str(tmp_path / 'run')!r}"] + [f"{k}={v!r}" for k, v in over.items()]
    return apply_overrides(cfg, items)


def _losses(out_dir, split="train"):
    return [(int(r["step"]), r["loss"]) for r in csv.DictReader(open(os.path.join(out_dir, "log.csv")))
            if r["split"] == split]


def test_tiny_model_learns(tmp_path):
    cfg = _cfg(tmp_path, **{"train.log_every": 1})
    res = train(cfg, progress=False)
    losses = [float(v) for _, v in _losses(cfg.train.out_dir)]
    assert len(losses) == 30 and losses[-1] < losses[0] - 0.5
    assert res["val_loss"] < losses[0]
    assert os.path.exists(os.path.join(cfg.train.out_dir, "loss.png"))


def test_resume_is_bit_identical(tmp_path):
    full = _cfg(tmp_path, **{"train.log_every": 1, "train.out_dir": str(tmp_path / "full")})
    train(full, progress=False)
    part = _cfg(tmp_path, **{"train.log_every": 1, "train.out_dir": str(tmp_path / "part"), "train.stop_at": 10})
    train(part, progress=False)
    part.train.stop_at = None
    train(part, resume=True, progress=False)
    assert _losses(full.train.out_dir) == _losses(part.train.out_dir)  # the logged strings: bit-identical
    assert _losses(full.train.out_dir, "val") == _losses(part.train.out_dir, "val")


def test_resume_under_another_way_of_computing(tmp_path):
    """``HOW_NOT_WHAT`` fields (here the memory's ``save_intermediates``) may change on resume: the same run, and
    keeping the pieces' intermediates instead of recomputing them gives the same losses bit for bit."""
    full = _cfg(tmp_path, **{"train.log_every": 1, "train.out_dir": str(tmp_path / "full")})
    train(full, progress=False)
    part = _cfg(tmp_path, **{"train.log_every": 1, "train.out_dir": str(tmp_path / "part"), "train.stop_at": 10})
    train(part, progress=False)
    part = _cfg(tmp_path, **{"train.log_every": 1, "train.out_dir": str(tmp_path / "part"),
                             "model.memory.save_intermediates": True})
    train(part, resume=True, progress=False)
    assert _losses(full.train.out_dir) == _losses(part.train.out_dir)


def test_same_run_check_names_the_field():
    saved = {"model": {"d_model": 64, "memory": {"depth": 2, "impl": "chunk"}}, "train": {"seed": 1}}
    ok = {"model": {"d_model": 64, "memory": {"depth": 2, "impl": "triton", "alpha_init": 1e-3}}, "train": {"seed": 1}}
    check_same_run(saved, ok)  # another impl, and a field the saved config predates: the same run
    bad = {"model": {"d_model": 64, "memory": {"depth": 3, "impl": "chunk"}}, "train": {"seed": 1}}
    with pytest.raises(ValueError, match=r"model\.memory\.depth=2, not 3"):
        check_same_run(saved, bad)


def test_truncated_or_mismatched_checkpoint_is_rejected(tmp_path):
    cfg = _cfg(tmp_path, **{"train.stop_at": 10})
    train(cfg, progress=False)
    ckpt = latest_checkpoint(cfg.train.out_dir)
    path = os.path.join(ckpt, "model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="meta.json"):
        load_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match="truncated"):  # --resume never restarts silently from scratch
        train(cfg, resume=True, progress=False)


def test_load_model_from_a_run_or_a_checkpoint_folder(tmp_path):
    cfg = _cfg(tmp_path, **{"train.stop_at": 10})
    train(cfg, progress=False)
    ckpt = latest_checkpoint(cfg.train.out_dir)
    weights = load_checkpoint(ckpt)[0]
    for where in (cfg.train.out_dir, ckpt):
        model, run_cfg, path = load_model(where)
        assert path == ckpt and run_cfg.model == cfg.model and run_cfg.data.seq_len == cfg.data.seq_len
        assert not model.training
        assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match=r"empty: no checkpoint found"):
        load_model(str(tmp_path / "empty"))


def test_resume_rejects_another_model(tmp_path):
    cfg = _cfg(tmp_path, **{"train.stop_at": 10})
    train(cfg, progress=False)
    other = _cfg(tmp_path, **{"model.d_model": 32})
    with pytest.raises(ValueError, match=r"model\.d_model=\d+, not 32"):
        train(other, resume=True, progress=False)
    for key, value in (("train.seed", 7), ("data.seq_len", 32), ("train.batch_size", 2)):
        other = _cfg(tmp_path, **{key: value})  # the same model, another run: not continued as this one
        with pytest.raises(ValueError, match=rf"{key}=\d+, not {value}"):
            train(other, resume=True, progress=False)


def test_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path):
    ref = _cfg(tmp_path, **{"train.log_every": 1, "train.out_dir": str(tmp_path / "ref"), "train.max_steps": 40})
    train(ref, progress=False)
    run_dir = str(tmp_path / "killed")
    corpus, data = str(tmp_path / "corpus"), str(tmp_path / "data")
    sets = ["--set", f"data.corpus={corpus!r}", "--set", f"data.data_dir={data!r}", "--set", "train.log_every=1",
            "--set", "train.max_steps=40"]
    cmd = [sys.executable, "-m", "titans.cli", "train", "--preset", "tiny", "--out-dir", run_dir, "--quiet", *sets]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint(run_dir) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest_checkpoint(run_dir) is not None
    subprocess.run(cmd + ["--resume"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got = _losses(run_dir)
    assert [s for s, _ in got] == list(range(1, 41))  # every step once
    assert got == _losses(ref.train.out_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg_dict, q, resume=False):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from titans.train import RunConfig

    res = train(RunConfig.from_dict(cfg_dict), resume=resume, progress=False)
    q.put((rank, res["train_loss"]))


def _two_processes(cfg, resume=False):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, cfg.to_dict(), q, resume)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0


def test_ddp_two_processes_match_one(tmp_path):
    one = _cfg(tmp_path, **{"train.log_every": 1, "train.out_dir": str(tmp_path / "one"), "train.max_steps": 8})
    train(one, progress=False)
    two = _cfg(tmp_path, **{"train.log_every": 1, "train.out_dir": str(tmp_path / "two"), "train.max_steps": 8})
    _two_processes(two)
    a = [float(v) for _, v in _losses(one.train.out_dir)]
    b = [float(v) for _, v in _losses(two.train.out_dir)]
    assert len(a) == len(b) == 8
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-4 * abs(x)


def test_fsdp_two_processes_match_one_and_resume(tmp_path):
    """FSDP2 (``train.fsdp``) over two processes: the same losses as one process, a run stopped and resumed under
    FSDP2 included, and checkpoints in one process's format (weights and AdamW state gathered from the shards,
    keyed as ``Optimizer.state_dict`` keys them), so a run may resume with or without sharding."""
    one = _cfg(tmp_path, **{"train.log_every": 1, "train.out_dir": str(tmp_path / "one"), "train.max_steps": 8})
    train(one, progress=False)
    two = _cfg(tmp_path, **{"train.log_every": 1, "train.out_dir": str(tmp_path / "two"), "train.max_steps": 8,
                            "train.fsdp": True, "train.stop_at": 4})
    _two_processes(two)
    assert latest_checkpoint(two.train.out_dir).endswith("step_000004")
    two.train.stop_at = None
    _two_processes(two, resume=True)
    a = [float(v) for _, v in _losses(one.train.out_dir)]
    b = [float(v) for _, v in _losses(two.train.out_dir)]
    assert len(a) == len(b) == 8
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-4 * abs(x)
    (wa, sa, _), (wb, sb, _) = (load_checkpoint(latest_checkpoint(r.train.out_dir)) for r in (one, two))
    assert wa.keys() == wb.keys() and sa["step"] == sb["step"] == 8
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)
    oa, ob = sa["optimizer"], sb["optimizer"]
    assert [g["params"] for g in oa["param_groups"]] == [g["params"] for g in ob["param_groups"]]
    assert oa["state"].keys() == ob["state"].keys()
    for i, st in oa["state"].items():
        assert st.keys() == ob["state"][i].keys()
        for name, v in st.items():
            torch.testing.assert_close(torch.as_tensor(ob["state"][i][name]).float(), torch.as_tensor(v).float(),
                                       rtol=1e-3, atol=1e-6)


def test_gradient_accumulation_matches_one_batch(tmp_path):
    """``train.grad_accum`` splits each step's batch into micro-batches: the same sequences, the gradient summed over
    them, so the losses match a run without accumulation (to float rounding): here a run accumulated in 4, resumed in 2
    (the accumulation may change on resume)."""
    one = _cfg(tmp_path, **{"train.log_every": 1, "train.out_dir": str(tmp_path / "one"), "train.max_steps": 6})
    train(one, progress=False)
    runs = [[float(v) for _, v in _losses(one.train.out_dir)]]
    cfg = _cfg(tmp_path, **{"train.log_every": 1, "train.out_dir": str(tmp_path / "switch"), "train.max_steps": 6,
                            "train.grad_accum": 4, "train.stop_at": 3})
    train(cfg, progress=False)
    cfg.train.grad_accum, cfg.train.stop_at = 2, None
    train(cfg, resume=True, progress=False)
    runs.append([float(v) for _, v in _losses(cfg.train.out_dir)])
    assert [len(r) for r in runs] == [6, 6]
    for x, *ys in zip(*runs):
        assert all(abs(x - y) <= 1e-4 * abs(x) for y in ys)
    from titans.data.loader import batch_rows

    assert [batch_rows(8, m, 2, r, 2) for m in (0, 1) for r in (0, 1)] == [range(0, 2), range(2, 4), range(4, 6),
                                                                          range(6, 8)]
    with pytest.raises(ValueError, match="train.batch_size=8: must be a multiple of train.grad_accum x processes"):
        batch_rows(8, 0, 2, 0, 3)


@pytest.mark.slow
def test_compiled_training_matches_eager_and_resumes_either_way(tmp_path):
    """``train.compile`` computes the same run (to float rounding: inductor fuses the float32 arithmetic
    differently), and may change on resume: an eager run resumed compiled logs the losses of an eager run. The
    smallest model with a memory (inductor compiles each of its chunks' code: minutes on 2 cores)."""
    small = {"train.log_every": 1, "train.max_steps": 6, "model.variant": "lmm", "model.n_layers": 1,
             "data.seq_len": 32}
    eager = _cfg(tmp_path, **small, **{"train.out_dir": str(tmp_path / "eager")})
    train(eager, progress=False)
    mixed = _cfg(tmp_path, **small, **{"train.out_dir": str(tmp_path / "mixed"), "train.stop_at": 3})
    train(mixed, progress=False)
    mixed.train.compile, mixed.train.stop_at = True, None
    train(mixed, resume=True, progress=False)
    a, b = ([float(v) for _, v in _losses(c.train.out_dir)] for c in (eager, mixed))
    assert len(a) == len(b) == 6
    assert all(abs(x - y) <= 1e-5 * abs(x) for x, y in zip(a, b)), (a, b)


def test_tensorboard_logs_each_step_once_across_a_resume(tmp_path):
    """With the ``log`` extra installed, the losses also go to TensorBoard; a resume from a checkpoint older than the
    last logged step purges the events past it, as the CSV log drops its rows."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(tmp_path, **{"train.log_every": 1, "train.max_steps": 6, "train.ckpt_every": 3, "train.stop_at": 5})
    train(cfg, progress=False)
    shutil.rmtree(latest_checkpoint(cfg.train.out_dir))  # steps 4 and 5 are logged, the checkpoint is step 3
    cfg.train.stop_at = None
    train(cfg, resume=True, progress=False)
    events = EventAccumulator(os.path.join(cfg.train.out_dir, "tb"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("loss/train")]
    csv_rows = [(s, float(v)) for s, v in _losses(cfg.train.out_dir)]
    assert [s for s, _ in logged] == [s for s, _ in csv_rows] == [1, 2, 3, 4, 5, 6]
    assert all(abs(a - b) <= 1e-5 * abs(b) for (_, a), (_, b) in zip(logged, csv_rows))
    assert [e.step for e in events.Scalars("loss/val")] == [6]
