"""``benchmarks/gpu_stalls.py``'s reading of proton's PC-sampling tree (the sampling itself needs CUDA)."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import gpu_stalls  # noqa: E402


def _line(path, line, kernel, **stalls):
    return {"frame": {"name": f"{path}:{line}@{kernel}", "type": "function"},
            "metrics": {"num_samples": 2 * sum(stalls.values()), **{f"stalled_{k}": v for k, v in stalls.items()}},
            "children": []}


def _tree():
    fwd = {"frame": {"name": "_seq_fwd_kernel"}, "metrics": {"time (ns)": 5}, "children": [
        _line("/r/titans/ops/memory/triton_blocks.py", 45, "_seq_fwd_kernel", long_scoreboard=6, selected=2,
              barrier=2),
        _line("/r/titans/ops/memory/triton_phased.py", 101, "_seq_fwd_kernel", barrier=3, membar=0)]}
    bwd = {"frame": {"name": "_seq_bwd_kernel"}, "metrics": {}, "children": [
        _line("/r/titans/ops/memory/triton_seq_bwd.py", 7, "_seq_bwd_kernel", wait=4)]}
    scope = {"frame": {"name": "D128 depth2 chunk64 T2048 phased"}, "metrics": {}, "children": [fwd, bwd]}
    return [{"frame": {"name": "ROOT"}, "metrics": {}, "children": [scope]}, {"device": {"0": "H100"}}]


def test_summarize_sums_lines_per_scope_and_kernel():
    rows = gpu_stalls.summarize(_tree())
    assert [(r["scope"], r["kernel"], r["samples"]) for r in rows] == [
        ("D128 depth2 chunk64 T2048 phased", "_seq_bwd_kernel", 4),
        ("D128 depth2 chunk64 T2048 phased", "_seq_fwd_kernel", 13)]
    fwd = rows[1]
    # shares of the samples summed over the reasons (num_samples, which double counts, is not used)
    assert fwd["reasons"] == {"long_scoreboard": round(6 / 13, 4), "barrier": round(5 / 13, 4),
                              "selected": round(2 / 13, 4)}
    assert [x["line"] for x in fwd["lines"]] == ["triton_blocks.py:45", "triton_phased.py:101"]
    assert fwd["lines"][0]["share"] == round(10 / 13, 4)
    assert fwd["lines"][0]["reasons"] == {"long_scoreboard": 0.6, "selected": 0.2, "barrier": 0.2}
    assert fwd["lines"][1]["reasons"] == {"barrier": 1.0}


def test_report_reads_a_saved_file(tmp_path, capsys, monkeypatch):
    path = tmp_path / "stalls_phased.hatchet"
    path.write_text(json.dumps(_tree()))
    monkeypatch.setattr(sys, "argv", ["gpu_stalls.py", "--report", str(path), "--top", "1"])
    gpu_stalls.main()
    out = capsys.readouterr().out
    assert "_seq_fwd_kernel: 13 samples; long_scoreboard 46%, barrier 38%, selected 15%" in out
    assert "triton_blocks.py:45" in out and "triton_phased.py:101" not in out  # --top 1
    saved = json.loads((tmp_path / "stalls_phased.json").read_text())
    assert saved["source"] == "stalls_phased.hatchet" and len(saved["rows"]) == 2


def test_a_line_named_without_its_kernel_counts_under_its_parent():
    line = _line("/r/titans/ops/memory/triton_seq.py", 9, "k")
    line["frame"]["name"] = "/r/titans/ops/memory/triton_seq.py:9"
    line["metrics"] = {"num_samples": 3, "stalled_wait": 3}
    tree = [{"frame": {"name": "ROOT"}, "metrics": {}, "children": [
        {"frame": {"name": "scope"}, "metrics": {}, "children": [
            {"frame": {"name": "_seq_fwd_kernel"}, "metrics": {}, "children": [line]}]}]}]
    (row,) = gpu_stalls.summarize(tree)
    assert (row["scope"], row["kernel"], row["samples"]) == ("scope", "_seq_fwd_kernel", 3)


def test_profile_samples_each_candidate_in_its_own_scope(tmp_path, monkeypatch):
    """The device path with the device and proton faked: each candidate is run once to compile, then once inside
    one sampling session in a scope that names it; the file proton writes is what is returned."""
    import types

    import _gpu_candidates
    import gpu_memory_op
    import torch

    monkeypatch.setattr(_gpu_candidates, "ONLY", [])  # profile() fills it in place: this test's own list

    calls = []
    fake = types.ModuleType("triton.profiler")
    fake.start = lambda name, **kw: calls.append(("start", os.path.basename(name), kw["mode"]))

    class scope:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            calls.append(("scope", self.name))

        def __exit__(self, *exc):
            return False
    fake.scope = scope

    def finalize():
        calls.append(("finalize",))
        (tmp_path / "stalls_default-reload.hatchet").write_text("[]")
    fake.finalize = finalize
    monkeypatch.setitem(sys.modules, "triton.profiler", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    used = []
    monkeypatch.setattr(gpu_memory_op, "use", lambda *a: used.append(a))
    monkeypatch.setattr(gpu_memory_op, "fallbacks", lambda: [])
    monkeypatch.setattr(gpu_memory_op, "run_ours", lambda impl, B, T, H, D, depth, chunk, backward:
                        (lambda: calls.append(("step", impl, B, T, backward))))
    path = gpu_stalls.profile("64,2,64,2048", "default,reload", str(tmp_path), 1 << 14, 8)
    assert path == str(tmp_path / "stalls_default-reload.hatchet")
    steps = [c for c in calls if c[0] == "step"]
    assert len(steps) == 4 and all(c[1:] == ("triton", 8, 2048, True) for c in steps)  # 2 warm-ups, 2 sampled
    assert [c[0] for c in calls] == ["step", "step", "start", "scope", "step", "scope", "step", "finalize"]
    assert calls[2] == ("start", "stalls_default-reload", "pcsampling")
    scopes = [c[1] for c in calls if c[0] == "scope"]
    assert scopes[0].startswith("D64 depth2 chunk64 T2048 default (") and " reload (" in scopes[1]
    assert len(used) == 4  # each candidate's configurations set before its warm-up and again before its sampling
