"""The interpreter shortcut of ``tests/triton_interp.py``: kernels that call helpers (ours and ``tl.sum``) give what
they should, launch after launch, and the language is Triton's own again once a launch ends."""

from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("the shortcut is for Triton's interpreter (TRITON_INTERPRET=1)", allow_module_level=True)

import triton.language as tl  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

from .triton_interp import skip_nested_language_patches  # noqa: E402


@triton.jit
def _scaled(x, s):
    return x * s


@triton.jit
def _row_sums(x_ptr, out_ptr, n: tl.constexpr):
    row = tl.program_id(0)
    x = tl.load(x_ptr + row * n + tl.arange(0, n))
    for _ in range(3):  # the helpers again and again in one program, as in the memory kernels' loops
        x = _scaled(x, 2.0)
    tl.store(out_ptr + row, tl.sum(x, axis=0))


def test_the_shortcut_is_installed_once_and_kernels_with_helpers_match_torch():
    assert getattr(interpreter._patch_lang, "_titans_shortcut", False)  # conftest installed it
    assert skip_nested_language_patches() is False  # a second install changes nothing
    arange = tl.arange
    x = torch.randn(5, 16)
    for _ in range(2):  # a second launch patches and restores as the first
        out = torch.empty(5)
        _row_sums[(5,)](x, out, 16)
        torch.testing.assert_close(out, (8 * x).sum(1))
        assert tl.arange is arange  # the launch restored the language
