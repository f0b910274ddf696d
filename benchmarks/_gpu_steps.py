"""The steps the GPU benchmarks time: the card's two ceilings, the benchmark's inputs, and one call of each
implementation (``chunk`` or ``triton``, titans-pytorch's NeuralMemory, fla's gated delta rule), forward or
forward+backward. Each ``run_*`` builds its inputs once and returns the step to time."""

from __future__ import annotations

from functools import partial

import torch
from _gpu_report import memory_dims
from _gpu_timing import cuda_time

from titans.ops import memory_update


def ceilings() -> dict:
    x = torch.empty(1 << 28, dtype=torch.float32, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    t = cuda_time(lambda: y.copy_(x), 5)
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    tm = cuda_time(lambda: a @ a, 5)
    return {"copy_GBps": 2 * x.numel() * 4 / t / 1e9, "bf16_matmul_TFLOPs": 2 * 8192**3 / tm / 1e12}


def inputs(B, T, H, D, depth, dtype=torch.float32, grad=False):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.nn.functional.normalize(torch.randn(B, T, H, D, device="cuda", generator=g), dim=-1)
            for _ in range(2))
    v = torch.randn(B, T, H, D, device="cuda", generator=g)
    # Gentle forgetting keeps a depth-2 memory O(1), where float32 results are comparable (see the gpu tests).
    gates = [torch.rand(B, T, H, depth, device="cuda", generator=g) * s for s in (0.0005, 1.0, 0.03)]
    dims = memory_dims(D, depth)
    W = tuple(torch.randn(B, H, dims[i], dims[i + 1], device="cuda", generator=g) / dims[i] ** 0.5
              for i in range(depth))
    norm = (torch.ones(H, D, device="cuda"), torch.zeros(H, D, device="cuda"))
    leaves = [q.to(dtype), k.to(dtype), v.to(dtype), *gates, *W]
    if grad:
        for t in leaves:
            t.requires_grad_()
    return leaves, norm


def _step(impl, leaves, norm, chunk, backward):
    q, k, v, a, e, th, *W = leaves
    o, _ = memory_update(q, k, v, a, e, th, tuple(W), chunk_size=chunk, norm=norm, residual=True, impl=impl)
    if backward:
        o.sum().backward()


def run_ours(impl, B, T, H, D, depth, chunk, backward):
    leaves, norm = inputs(B, T, H, D, depth, grad=backward)
    return partial(_step, impl, leaves, norm, chunk, backward)


def run_pair(B, T, H, D, depth, chunk, backward):
    """``triton``'s and ``chunk``'s steps on one set of inputs, for :func:`_gpu_timing.paired`."""
    leaves, norm = inputs(B, T, H, D, depth, grad=backward)
    return tuple(partial(_step, impl, leaves, norm, chunk, backward) for impl in ("triton", "chunk"))


def run_titans_pytorch(B, T, H, D, depth, chunk, backward):
    from titans_pytorch import NeuralMemory

    mem = NeuralMemory(dim=H * D, heads=H, dim_head=D, chunk_size=chunk, batch_size=chunk,
                       default_model_kwargs={"depth": depth, "expansion_factor": 4}).cuda()
    x = torch.randn(B, T, H * D, device="cuda", requires_grad=backward)

    def step():
        out = mem(x)[0]
        if backward:
            out.sum().backward()
    return step


def run_fla(B, T, H, D, backward):
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    q, k, v = (torch.nn.functional.normalize(torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16), dim=-1)
               .requires_grad_(backward) for _ in range(3))
    g = (-torch.rand(B, T, H, device="cuda") * 0.05).requires_grad_(backward)
    beta = torch.rand(B, T, H, device="cuda").requires_grad_(backward)

    def step():
        o, _ = chunk_gated_delta_rule(q, k, v, g, beta)
        if backward:
            o.float().sum().backward()
    return step
