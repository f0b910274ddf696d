from __future__ import annotations

import pytest
import torch

from titans.device import resolve_device


def test_names_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        assert auto.type != "cuda"


@pytest.mark.parametrize("name,match", [("gpu0", "not a device"), ("cuda:x", "not a device"),
                                        ("meta", "unsupported device type")])
def test_bad_names_name_the_field_and_value(name, match):
    with pytest.raises(ValueError, match=match) as e:
        resolve_device(name, "train.device")
    assert f"train.device={name!r}" in str(e.value)


def test_a_non_string_is_an_error():
    with pytest.raises(ValueError, match="--device=3"):
        resolve_device(3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is missing")
def test_cuda_without_cuda_is_an_error():
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="no CUDA device here"):
            resolve_device(name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_takes_the_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
