"""Named ablations (``titans.models.ablations``) and the forget gate's initial value: the library default, and the
value the committed studies pin so that their commands reproduce their tables."""

import dataclasses

import pytest
import torch

from titans.forecast.models import MemoryForecaster
from titans.genomics.models import backbone_config
from titans.layers import NeuralMemory
from titans.layers.memory import ALPHA_INIT
from titans.models import STUDY_ALPHA_INIT, MemoryConfig, ModelConfig
from titans.models.ablations import ABLATIONS, ablate, split_name
from titans.studies.lm import model_config


def test_split_name():
    assert split_name("mac-noconv") == ("mac", "noconv") and split_name("mag") == ("mag", "")


@pytest.mark.parametrize("ablation", [a for a in ABLATIONS if ABLATIONS[a] is not None])
def test_memory_ablations_change_the_memory_only(ablation):
    cfg = ModelConfig(variant="mag", vocab_size=16, d_model=32, n_layers=1, n_heads=2,
                      memory=MemoryConfig(alpha_init=STUDY_ALPHA_INIT))  # as the studies' (slowforget: 1e-3)
    out = ablate(cfg, ablation)
    assert out.memory != cfg.memory
    assert {k: v for k, v in vars(out).items() if k != "memory"} == {k: v for k, v in vars(cfg).items()
                                                                       if k != "memory"}


def test_ablations_chain():
    lmm = ModelConfig(variant="lmm", vocab_size=16, d_model=32, n_layers=1, n_heads=2,
                      memory=MemoryConfig(alpha_init=STUDY_ALPHA_INIT))
    out = ablate(lmm, "depth3-slowforget")
    assert out.memory.depth == 3 and out.memory.alpha_init == 1e-3
    assert out == ablate(ablate(lmm, "depth3"), "slowforget") == ablate(lmm, "slowforget-depth3")
    assert split_name("lmm-depth3-slowforget") == ("lmm", "depth3-slowforget")
    mac = ablate(ModelConfig(variant="mac", vocab_size=16, d_model=32, n_layers=1, n_heads=2), "nopersist-noconv")
    assert mac.n_persistent == 0 and not mac.memory.conv
    mag = ablate(ModelConfig(variant="mag", vocab_size=16, d_model=32, n_layers=1, n_heads=2), "sumgate-slowforget")
    assert mag.memory_gate == "sum" and mag.memory.alpha_init == 1e-3 and mag.n_persistent == 4
    mac = ablate(dataclasses.replace(mag, variant="mac", memory_gate="sigmoid"), "inputwrite-sumgate")
    assert mac.mac_write == "input" and mac.memory_gate == "sum"
    assert ablate(dataclasses.replace(mag, memory_gate="sigmoid"), "gatesum").memory_gate == "gatesum"
    with pytest.raises(ValueError, match=r"'mag-inputwrite': mag has no such setting \(-inputwrite: mac only\)"):
        ablate(mag, "inputwrite", name="mag-inputwrite")
    with pytest.raises(ValueError, match="change the same setting twice"):
        ablate(lmm, "linear-depth3")
    with pytest.raises(ValueError, match="change the same setting twice"):
        ablate(lmm, "noconv-noconv")
    with pytest.raises(ValueError, match="change the same setting twice"):
        ablate(mag, "sumgate-gatesum")
    with pytest.raises(ValueError, match="model 'lmm-depth3-bogus': unknown ablation 'bogus'"):
        ablate(lmm, "depth3-bogus", name="lmm-depth3-bogus")


def test_ablation_errors():
    lmm = ModelConfig(variant="lmm", vocab_size=16, d_model=32, n_layers=1, n_heads=2)
    assert ablate(lmm, "") is lmm
    with pytest.raises(ValueError, match="model 'lmm-bogus': unknown ablation 'bogus'"):
        ablate(lmm, "bogus")
    with pytest.raises(ValueError, match="lmm has no attention"):
        ablate(lmm, "nopersist")
    with pytest.raises(ValueError, match=r"'mal-sumgate': mal has no gate .*mac, mag only"):
        ablate(dataclasses.replace(lmm, variant="mal"), "sumgate", name="mal-sumgate")
    with pytest.raises(ValueError, match=r"'lmm-conv': lmm has its short convolution .*transformer, swa only"):
        ablate(lmm, "conv", name="lmm-conv")
    tfm = ModelConfig(variant="transformer", vocab_size=16, d_model=32, n_layers=1, n_heads=2)
    assert ablate(tfm, "conv").attn_conv and not tfm.attn_conv
    with pytest.raises(ValueError, match="attn_conv.*transformer and swa only"):
        ModelConfig(variant="mag", attn_conv=True)
    with pytest.raises(ValueError, match="model 'tfm': transformer has no neural memory"):
        ablate(ModelConfig(variant="transformer", vocab_size=16, d_model=32, n_layers=1, n_heads=2), "noconv",
               name="tfm")


def test_forget_gate_default_and_the_studies_pin():
    assert ALPHA_INIT == MemoryConfig().alpha_init == 1e-3 and STUDY_ALPHA_INIT == 0.01
    layer = NeuralMemory(32, 2)
    g = layer.n_heads * layer.n_gates
    assert torch.sigmoid(layer.gates.bias[2 * g:].detach()).sub(ALPHA_INIT).abs().max() < 1e-9
    # every study with committed results keeps the value it was trained with
    assert model_config("lmm").memory.alpha_init == STUDY_ALPHA_INIT
    assert backbone_config("mac").memory.alpha_init == STUDY_ALPHA_INIT
    mem = MemoryForecaster(32, 8, 2, d_model=32, n_heads=2).mems[0]
    assert torch.sigmoid(mem.gates.bias[2 * g:].detach()).sub(STUDY_ALPHA_INIT).abs().max() < 1e-8


def test_the_gates_combine_attention_and_memory_as_documented():
    from titans.models.common import MemoryGate

    torch.manual_seed(0)
    y, m = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    gates = {mode: MemoryGate(8, mode=mode) for mode in ("sigmoid", "sum", "gatesum")}
    with torch.no_grad():
        gates["sigmoid"].norm_y.weight.uniform_(0.5, 1.5)
        gates["sigmoid"].norm_m.weight.uniform_(0.5, 1.5)
    for g in gates.values():
        g.load_state_dict(gates["sigmoid"].state_dict())
    ny, nm = gates["sigmoid"].norm_y(y), gates["sigmoid"].norm_m(m)
    assert torch.allclose(gates["sigmoid"](y, m), ny * torch.sigmoid(nm))
    assert torch.allclose(gates["sum"](y, m), ny + nm)
    assert torch.allclose(gates["gatesum"](y, m), ny * torch.sigmoid(nm) + nm)
    with pytest.raises(ValueError, match="'tanh'"):
        MemoryGate(8, mode="tanh")
