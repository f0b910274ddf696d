"""``benchmarks/gpu_profile.py``'s reading of the profiler's kernel records (the profiling itself needs CUDA)."""

import json
import os
import sys
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import gpu_profile  # noqa: E402

GEMM = "sm90_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize128x128x32_warpgroupsize1x1x1_execute_segment_k_off_kernel"
ADD = "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, std::array<char*, 3ul> >"


def test_kernels_by_kind():
    assert gpu_profile.kind(GEMM) == "matmul"
    assert gpu_profile.kind("ampere_sgemm_128x64_nn") == "matmul"
    assert gpu_profile.kind("_seq_fwd_kernel") == gpu_profile.kind("_split_fwd_kernel") == "triton"
    assert gpu_profile.kind(ADD) == "elementwise"
    assert gpu_profile.kind("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float> >") == "reduction"
    assert gpu_profile.kind("Memcpy DtoD (Device -> Device)") == "copy"
    assert gpu_profile.kind("something_else") == "other"


def test_summarize_sums_by_kernel_and_kind_and_counts_overlap_once():
    events = [(GEMM, 0, 10), (ADD, 10, 12), (GEMM, 20, 30), ("_seq_fwd_kernel", 25, 45)]
    r = gpu_profile.summarize(events, wall_us=60.0)
    assert r["launches"] == 4 and r["wall_us"] == 60.0
    assert r["busy_us"] == 10 + 2 + 25  # [20, 45] once, though two kernels overlap in it
    assert r["kinds"] == {"matmul": {"us": 20.0, "launches": 2, "share": round(20 / 42, 4)},
                          "triton": {"us": 20.0, "launches": 1, "share": round(20 / 42, 4)},
                          "elementwise": {"us": 2.0, "launches": 1, "share": round(2 / 42, 4)}}
    assert [(k["kind"], k["us"], k["launches"]) for k in r["kernels"]] == [
        ("matmul", 20.0, 2), ("triton", 20.0, 1), ("elementwise", 2.0, 1)]
    assert len(gpu_profile.summarize(events, 60.0, top=1)["kernels"]) == 1


def test_kernel_events_keep_the_device_records():
    from torch.autograd import DeviceType

    ev = [SimpleNamespace(name="aten::mm", device_type=DeviceType.CPU, time_range=SimpleNamespace(start=0, end=9)),
          SimpleNamespace(name=GEMM, device_type=DeviceType.CUDA, time_range=SimpleNamespace(start=2, end=7))]
    assert gpu_profile.kernel_events(SimpleNamespace(events=lambda: ev)) == [(GEMM, 2.0, 7.0)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_without_cuda_it_says_so(capsys):
    assert gpu_profile.profile("64,2,16,64", "chunk", 128, 2, 5) is None
    assert "no CUDA" in capsys.readouterr().out


def test_report_prints_a_saved_file(tmp_path, capsys, monkeypatch):
    row = {"D": 128, "depth": 2, "chunk": 64, "T": 2048, "B": 64, "impl": "chunk", "pass": "fwd",
           **gpu_profile.summarize([(GEMM, 0, 1000), (ADD, 1000, 1500)], 2000.0)}
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"rows": [row]}))
    monkeypatch.setattr(sys, "argv", ["gpu_profile.py", "--report", str(path)])
    gpu_profile.main()
    out = capsys.readouterr().out
    assert "wall 2.0 ms, kernels busy 1.5 ms, 2 launches; matmul 67% (1), elementwise 33% (1)" in out
