"""``benchmarks/gpu_lease.sh`` end to end on a machine without CUDA (a smoke test of the script's flow): every
optional step runs in its turn (each python step says there is nothing to do here), no step gets a time limit
``timeout`` refuses, and the logs are packed."""

import os
import subprocess
import sys
import tarfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine this would run the real lease")
def test_the_lease_script_runs_its_steps_in_turn(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "DEFAULT_TESTS": "0", "FINAL_TESTS": "0", "BASELINES": "",
           "CANDIDATES": "default", "LAST_CANDIDATES": "piece", "LAST_S": "30", "STALLS": "default", "STALLS_S": "20",
           "PROFILE": "chunk", "PROFILE_S": "20", "SIZES": "64,2,16,64", "TUNE_EACH": "1", "SHARDS": "2",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    env.pop("TRITON_INTERPRET", None)
    run = subprocess.run(["bash", "benchmarks/gpu_lease.sh", "150"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "invalid" not in out, out[-3000:]  # timeout's refusal of a negative or malformed limit
    for step in ("compiled", "benchmark rc=", "benchmark (piece) rc=", "stalls (default) rc=", "profile rc=",
                 "done after"):
        assert step in out, step
    with tarfile.open(tmp_path / "logs.tgz") as tar:
        names = set(tar.getnames())
    assert {"compile.log", "bench_piece.log", "stalls_default.log", "profile.log"} <= names
    assert "unrecognized arguments" not in (tmp_path / "bench.log").read_text()  # every option reached the benchmark
