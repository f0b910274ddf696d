"""Every variant: causal, streams exactly in any pieces, bounded state, trains without NaN; presets; config errors."""

from __future__ import annotations

import pytest
import torch
from torch.utils._pytree import tree_leaves

from titans.models import VARIANTS, MemoryConfig, ModelConfig, TitansLM, count_params, paper, state_nbytes, tiny

from ..conftest import rel_err


def _model(variant, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    return TitansLM(tiny(variant, **kw)).to(dtype)


def _logits_in_pieces(model, idx, cuts):
    bounds = [0, *cuts, idx.shape[1]]
    state, outs = None, []
    for a, b in zip(bounds[:-1], bounds[1:]):
        out = model(idx[:, a:b], state=state)
        state = out.state
        outs.append(out.logits)
    return torch.cat(outs, 1), state


# every variant, and the gated variants with the other gates (ModelConfig.memory_gate)
CASES = [pytest.param(v, {}, id=v) for v in VARIANTS] + \
    [pytest.param(v, {"memory_gate": g}, id=f"{v}-{g}") for v in ("mac", "mag") for g in ("sum", "gatesum")] + \
    [pytest.param("mac", {"mac_write": "input"}, id="mac-inputwrite")] + \
    [pytest.param(v, {"attn_conv": True}, id=f"{v}-conv") for v in ("transformer", "swa")]


@pytest.mark.parametrize("variant,kw", CASES)
def test_causal(variant, kw):
    model = _model(variant, **kw)
    idx = torch.randint(0, 256, (2, 70))
    ref = model(idx).logits
    # token 0, inside a chunk (8), at chunk / segment (16) boundaries, past the window (32)
    for t in (0, 5, 8, 16, 33, 69):
        idx2 = idx.clone()
        idx2[:, t] = (idx2[:, t] + 1) % 256
        out = model(idx2).logits
        assert torch.equal(out[:, :t], ref[:, :t]), t
        assert not torch.equal(out[:, t], ref[:, t]), t


@pytest.mark.parametrize("variant,kw", CASES)
def test_streaming_equals_one_call(variant, kw):
    model = _model(variant, **kw)
    T = 100  # 3x the window, 6 MAC segments, 12 memory chunks
    idx = torch.randint(0, 256, (2, T))
    ref = model(idx).logits
    g = torch.Generator().manual_seed(1)
    random_cuts = sorted(torch.randperm(T - 1, generator=g)[:9].add(1).tolist())
    for cuts in (random_cuts, [16, 32, 48], list(range(1, T))):
        got, _ = _logits_in_pieces(model, idx, cuts)
        assert rel_err(got, ref) <= 1e-9, cuts[:5]


@pytest.mark.parametrize("variant", VARIANTS)
def test_streaming_float32(variant):
    model = _model(variant, torch.float32)
    idx = torch.randint(0, 256, (1, 70))
    ref = model(idx).logits
    got, _ = _logits_in_pieces(model, idx, [7, 20, 21, 50])
    assert rel_err(got, ref) <= 1e-4


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "transformer"])
def test_state_is_bounded(variant):
    model = _model(variant, torch.float32)
    cfg = model.cfg
    w = max(cfg.window, cfg.segment_len)
    _, s2 = _logits_in_pieces(model, torch.randint(0, 256, (1, 2 * w)), [w])
    _, s10 = _logits_in_pieces(model, torch.randint(0, 256, (1, 10 * w)), [w, 5 * w])
    assert state_nbytes(s2) == state_nbytes(s10)


CHUNK_GATES = pytest.param("mag", {"memory": MemoryConfig(chunk_size=8, chunk_gates=True)}, id="mag-chunkgates")


@pytest.mark.parametrize("variant,kw", CASES + [CHUNK_GATES])
def test_state_holds_only_its_own_storage(variant, kw):
    """After a prefill far longer than the window, no state tensor is a slice that keeps the prefill's activations
    alive: each one's storage is at most twice its own size (a decoding step's slice may keep one more token)."""
    model = _model(variant, torch.float32, **kw)
    idx = torch.randint(0, 256, (2, 200))
    for cuts in ([], list(range(150, 200))):  # one prefill; a prefill, then decoding token by token
        _, state = _logits_in_pieces(model, idx, cuts)
        for t in (t for t in tree_leaves(state) if isinstance(t, torch.Tensor)):
            own = t.numel() * t.element_size()
            assert t.untyped_storage().nbytes() <= 2 * own, (cuts[:1], tuple(t.shape), t.untyped_storage().nbytes())


def test_transformer_cache_grows():
    model = _model("transformer", torch.float32)
    _, s1 = _logits_in_pieces(model, torch.randint(0, 256, (1, 20)), [])
    _, s2 = _logits_in_pieces(model, torch.randint(0, 256, (1, 40)), [])
    assert state_nbytes(s2) > state_nbytes(s1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_trains_without_nan(variant):
    torch.manual_seed(0)
    model = TitansLM(tiny(variant))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    idx = torch.randint(0, 256, (2, 48))
    losses = []
    for _ in range(4):
        out = model(idx[:, :-1], targets=idx[:, 1:])
        assert torch.isfinite(out.logits).all()
        opt.zero_grad()
        out.loss.backward()
        for n, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), n
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("variant", ["mac", "mag", "mal", "swa"])
def test_sdpa_matches_naive_attention(variant):
    a = _model(variant, attn_impl="sdpa")
    b = _model(variant, attn_impl="naive")
    for T in (50, 100):  # 100: past twice the window, where sdpa runs the window in blocks (attend_window)
        idx = torch.randint(0, 256, (2, T))
        assert rel_err(a(idx).logits, b(idx).logits) <= 1e-9


def test_generate_reuses_the_state_and_matches_greedy_recompute():
    model = _model("mac")
    prompt = torch.randint(0, 256, (1, 20))
    tokens, _ = model.generate(prompt, 12, temperature=0)
    assert tokens.shape == (1, 32) and torch.equal(tokens[:, :20], prompt)
    seq = prompt
    for _ in range(12):  # recompute the whole prefix each step
        seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(tokens, seq)


@pytest.mark.parametrize("kw,match", [(dict(temperature=-0.5), "temperature"), (dict(top_k=0), "top_k"),
                                      (dict(max_new_tokens=-1), "max_new_tokens")])
def test_generate_names_a_bad_sampling_option(kw, match):
    model = _model("lmm")
    args = {"max_new_tokens": 4, **kw}
    with pytest.raises(ValueError, match=match):
        model.generate(torch.randint(0, 256, (1, 5)), args.pop("max_new_tokens"), **args)


@pytest.mark.parametrize("size", ["170M", "340M", "760M", "1.3B"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_paper_presets_match_their_names(size, variant):
    cfg = paper(size, variant)
    with torch.device("meta"):
        n = count_params(TitansLM(cfg))
    target = {"170M": 170e6, "340M": 340e6, "760M": 760e6, "1.3B": 1.3e9}[size]
    assert abs(n - target) / target <= 0.10, n


@pytest.mark.parametrize("kw,match", [({"variant": "rnn"}, "variant"), ({"n_heads": 3}, "n_heads"),
                                      ({"d_model": 0}, "d_model"), ({"memory": {"depth": 0}}, "memory.depth"),
                                      ({"memory": {"activation": "tanh"}}, "memory.activation"),
                                      ({"n_persistent": -1}, "n_persistent"), ({"attn_impl": "flash"}, "attn_impl"),
                                      ({"memory_gate": "tanh"}, "memory_gate='tanh'"),
                                      ({"mac_write": "y"}, "mac_write='y'")])
def test_bad_config_names_field_and_value(kw, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kw)


def test_bad_input_is_rejected_before_work():
    model = _model("lmm", torch.float32)
    with pytest.raises(ValueError, match="idx"):
        model(torch.randn(2, 5))
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.full((1, 3), 300))
    with pytest.raises(ValueError, match="targets"):
        model(torch.zeros(1, 3, dtype=torch.long), targets=torch.zeros(1, 4, dtype=torch.long))


def test_config_round_trips_through_a_dict():
    cfg = tiny("mag")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


@pytest.mark.parametrize("variant", ["mac", "swa"])
def test_stream_helper_gives_the_per_position_losses_of_one_call(variant):
    from titans.models import stream

    model = _model(variant)
    tokens = torch.randint(0, 256, (2, 90))
    losses, state = stream(model, tokens, piece=17)
    logits = model(tokens[:, :-1]).logits
    ref = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
    assert losses.shape == (2, 89) and rel_err(losses, ref) <= 1e-9
    assert state.pos == 89
