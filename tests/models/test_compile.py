"""``torch.compile`` (``train.compile``): every variant traces without graph breaks but the deliberate one around the
memory's loop over chunks, and the traced model (forward and backward graphs, run op by op: the ``aot_eager``
backend) computes what the eager one does. Inductor's code generation is covered by ``tests/train``'s compiled
training run (minutes per model on 2 cores, so once). Slow: run with ``pytest -m slow``."""

from __future__ import annotations

import pytest
import torch

from titans.models import VARIANTS, MemoryConfig, TitansLM, tiny

from ..conftest import rel_err

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("variant", VARIANTS)
def test_compiled_model_has_no_graph_break_and_matches_eager(variant):
    torch.manual_seed(0)
    model = TitansLM(tiny(variant, n_layers=1)).double()
    idx = torch.randint(0, 256, (2, 40))  # chunks of 8, segments of 16: a partial last chunk and segment
    # Breaks cost speed, not results, so they are asserted, not only the numbers. The one allowed is deliberate: the
    # loop over chunks runs as Python (``chunk.memory_update_chunk``), what it calls compiled (a Function given the
    # same tensor twice once broke each piece's graph too).
    reasons = [str(b.reason) for b in torch._dynamo.explain(model)(idx, idx).break_reasons]
    assert all("memory_update_chunk" in r and "torch.compiler.disable" in r for r in reasons), reasons
    torch._dynamo.reset()
    out = model(idx, idx)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    cout = torch.compile(model, backend="aot_eager")(idx, idx)
    cout.loss.backward()
    assert rel_err(cout.logits, out.logits) <= 1e-12
    for n, p in model.named_parameters():
        assert rel_err(p.grad, grads[n]) <= 1e-10, n


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", ["lmm", "mac"])
def test_compiled_model_with_triton_memory_matches_eager_on_cuda(variant):
    """``train.compile`` with ``memory.impl="triton"``: Inductor compiles the model around the memory's Triton
    kernels (Dynamo traces into the autograd Functions that launch them), and the compiled model computes what the
    eager one does, in float32 (the kernels' own bound against ``chunk``, 1e-5)."""
    torch.manual_seed(0)
    cfg = tiny(variant, n_layers=1, memory=MemoryConfig(chunk_size=16, impl="triton"))
    model = TitansLM(cfg).cuda()
    idx = torch.randint(0, 256, (2, 200), device="cuda")  # chunks of 16, segments of 16: partial last ones
    out = model(idx, idx)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    cout = torch.compile(model)(idx, idx)
    cout.loss.backward()
    assert rel_err(cout.logits, out.logits) <= 1e-5
    for n, p in model.named_parameters():
        assert rel_err(p.grad, grads[n]) <= 1e-5, n
