"""Shared test helpers: a relative-error measure (FLA-style) and deterministic seeding."""

from __future__ import annotations

import os

import pytest
import torch

# Without CUDA the Triton kernels run in Triton's interpreter (read when the kernel module is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
if os.environ.get("TRITON_INTERPRET") == "1":  # without the interpreter's per-helper re-patching (same results)
    from .triton_interp import skip_nested_language_patches

    skip_nested_language_patches()
# The tests of the saved-state budget set it themselves (triton_op.SAVE_BUDGET_BYTES); one from the shell would
# change which calls run in checkpointed segments.
os.environ.pop("TITANS_TRITON_SAVE_BUDGET", None)
# Under pytest-xdist (`make test` runs `-n auto`) each worker takes its share of the cores: every worker at
# torch's default (all cores) would oversubscribe them. The processes a test starts (the training CLI killed and
# resumed, the benchmarks' measured processes, the lease script's steps) read the share from OMP_NUM_THREADS: at
# torch's default beside a busy core, OpenMP's waiting threads cost 2-3x the time (the SIGKILL-and-resume test
# beside a one-thread job on 2 cores: 96 s with two threads, 41 s with one).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _SHARE = max(1, (os.cpu_count() or 1) // _WORKERS)
    torch.set_num_threads(_SHARE)
    os.environ["OMP_NUM_THREADS"] = str(_SHARE)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, with 0/0 = 0 (both exactly zero)."""
    a, b = a.detach().double(), b.detach().double()
    assert not torch.isnan(a).any() and not torch.isnan(b).any(), "NaN in compared tensors"
    den = b.norm()
    num = (a - b).norm()
    if den == 0:
        return float(num)
    return float(num / den)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(42)
