"""Does a training run give the same losses again, and on a CPU with other vector instructions? (CPU; a few minutes.)

    python benchmarks/float_reproducibility.py                       # S-NIAH-2's MAC ablation, 60 steps
    python benchmarks/float_reproducibility.py --variant lmm-noforget --steps 120

Trains one model of ``titans study niah`` (same command, same seed) three times, each in a fresh process with one
thread: twice as it is, and once with ATen's kernels and MKL held to AVX2 (``ATEN_CPU_CAPABILITY=avx2``,
``MKL_ENABLE_INSTRUCTIONS=AVX2``), which is what the same wheel runs on a CPU without AVX-512. It prints each run's
logged training losses against the first run's: the first step where they differ and the largest difference.

Why: a long run's exact-match figures are sensitive to the last bit. Training is bit-for-bit deterministic on one
machine (the first two runs; the resume test), but float32 sums in 512-bit and 256-bit vectors round differently,
and over thousands of steps of a non-convex optimization such differences can grow into a different model. On a CPU
whose default capability is already AVX2 the third run is the same as the first. Writes
``benchmarks/results/float_reproducibility.json``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import table, write_results  # noqa: E402

RUNS = (("default", {}), ("default again", {}),
        ("avx2", {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}))


def train(args, env_extra: dict, out: str) -> dict[int, float]:
    """One training run of ``titans study niah`` in a fresh process: ``{step: training loss}``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    cmd = [sys.executable, "-m", "titans.cli", "study", "niah", "--steps", str(args.steps), "--seed", str(args.seed),
           "--task", args.task, "--long", "", "--lengths", "256", "--samples", "1", "--variants", args.variant,
           "--out", out]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (log,) = [os.path.join(out, d, "log.csv") for d in os.listdir(out) if os.path.isdir(os.path.join(out, d))]
    with open(log) as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f) if r["split"] == "train"}


def capability(env_extra: dict) -> str:
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env_extra}, check=True,
                          capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="mac-inputwrite-sumgate-slowforget")
    ap.add_argument("--task", default="niah:number")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "float_reproducibility.json"))
    args = ap.parse_args()

    losses, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, env_extra) in enumerate(RUNS):
            losses[name] = train(args, env_extra, os.path.join(tmp, str(i)))
            ref, got = losses[RUNS[0][0]], losses[name]
            differ = [s for s in sorted(ref) if got.get(s) != ref[s]]
            rows.append({"run": name, "cpu capability": capability(env_extra), "logged steps": len(got),
                         "first differing step": differ[0] if differ else "-",
                         "max loss difference": max((abs(got[s] - ref[s]) for s in ref), default=0.0),
                         f"loss @ {max(got)}": got[max(got)]})
    print(f"\n## Training losses of `titans study niah --variants {args.variant} --task {args.task} --seed {args.seed} "
          f"--steps {args.steps}`, one thread, against the first run\n")
    print(table(rows, list(rows[0])))
    write_results(args.out, {"config": vars(args) | {"out": os.path.basename(args.out)}, "rows": rows,
                             "losses": {k: {str(s): v for s, v in d.items()} for k, d in losses.items()}})


if __name__ == "__main__":
    main()
