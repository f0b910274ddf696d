import torch

from titans.layers.state import keep_last


def test_keep_last_copies_a_short_tail_of_a_long_tensor():
    x = torch.randn(2, 100, 3)
    t = keep_last(x, 3)
    assert torch.equal(t, x[:, -3:]) and t.untyped_storage().nbytes() == t.numel() * t.element_size()


def test_keep_last_is_a_view_when_little_is_dropped():
    x = torch.randn(2, 8, 3)  # a decoding step: the state plus one token
    t = keep_last(x, 7)
    assert torch.equal(t, x[:, 1:]) and t.data_ptr() == x[:, 1:].data_ptr()


def test_keep_last_keeps_everything_when_there_is_less():
    x = torch.arange(5)
    assert torch.equal(keep_last(x, 9, 0), x)
