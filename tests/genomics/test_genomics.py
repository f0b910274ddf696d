"""The genus task and its classifiers: FASTA reading, strand handling, strains held out per split, class balance and
reproducibility; every classifier's shape, the k-mer counts by hand, streamed classification equal to one call in
float64; a run's selection, exact resume after an interruption, the report, and the errors."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from titans.genomics import GENERA, SPLITS, GenomicsDataError, GenusTask, data_root, read_fasta
from titans.genomics.data import FILES, reverse_complement
from titans.genomics.models import MODELS, KmerLinear, build_classifier
from titans.genomics.run import report, run
from titans.models import STUDY_ALPHA_INIT

GC = {"E.Coli": 0.5, "V.Cholerae": 0.45, "S.Aureus": 0.3, "H.Pylori": 0.4}


def _genomes(n=600, seed=0):
    """Every genome of FILES as one random record of its genus's GC content (V. cholerae with two records)."""
    rng = np.random.default_rng(seed)
    genus = {g: gen for gen, sp in SPLITS.items() for names in sp.values() for g in names}
    out = {}
    for name in FILES:
        gc = GC[genus[name]]
        p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
        sizes = (n, n // 3) if genus[name] == "V.Cholerae" else (n,)
        out[name] = [rng.choice(4, m, p=p).astype(np.uint8) for m in sizes]
    return out


def _text(x: np.ndarray) -> str:
    return "".join("ACGTN"[i] for i in x)


def test_read_fasta(tmp_path):
    p = tmp_path / "g.fasta.gz"
    with gzip.open(p, "wt") as f:
        f.write(">chr1 some name\r\nACGTn\r\nacgt\n>chr2\nGGRA\n")
    recs = read_fasta(str(p))
    assert [r.tolist() for r in recs] == [[0, 1, 2, 3, 4, 0, 1, 2, 3], [2, 2, 4, 0]]
    bad = tmp_path / "x.fa"
    bad.write_text("ACGT\n")
    with pytest.raises(GenomicsDataError, match="not FASTA"):
        read_fasta(str(bad))
    empty = tmp_path / "e.fa"
    empty.write_text(">only a header\n")
    with pytest.raises(GenomicsDataError, match="no sequence"):
        read_fasta(str(empty))


def test_reverse_complement():
    x = np.array([[0, 0, 1, 4, 2, 3]], dtype=np.uint8)  # AACNGT
    assert _text(reverse_complement(x)[0]) == "ACNGTT"


def test_data_root_names_the_missing_files(tmp_path, monkeypatch):
    monkeypatch.delenv("TITANS_GENOMICS_DIR", raising=False)
    with pytest.raises(GenomicsDataError, match=r"17 of 17 genome files missing.*make genomics-data"):
        data_root(str(tmp_path))
    for path in FILES.values():
        os.makedirs(tmp_path / os.path.dirname(path), exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    monkeypatch.setenv("TITANS_GENOMICS_DIR", str(tmp_path))
    assert data_root() == str(tmp_path)


def test_windows_come_from_their_split_only():
    genomes = _genomes()
    task = GenusTask(32, genomes=genomes)
    texts = {g: [_text(r) for r in recs] for g, recs in genomes.items()}
    for split in ("val", "test"):
        x, y = task.fixed(split, 20, seed=3)
        assert x.shape == (80, 32) and x.dtype == torch.int64 and y.tolist() == sorted(y.tolist())
        assert torch.bincount(y).tolist() == [20] * 4
        for w, label in zip(x.numpy().astype(np.uint8), y.tolist()):
            fwd, rc = _text(w), _text(reverse_complement(w))
            own = [g for g in SPLITS[GENERA[label]][split]]
            assert any(fwd in t or rc in t for g in own for t in texts[g]), (split, label)
    x2, y2 = task.fixed("test", 20, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    xa, _ = task.fixed("val", 20, seed=3)
    assert not torch.equal(xa, x)  # validation and test differ even with one seed


def test_train_batches_balanced_without_n_and_both_strands():
    genomes = _genomes()
    genomes["MG1655-K12"][0][100:110] = 4  # an N run: no window may contain it
    task = GenusTask(40, genomes=genomes)
    x, y = task.train_batch(400, np.random.default_rng(0))
    assert torch.bincount(y).tolist() == [100] * 4 and not (x == 4).any()
    ref = _text(genomes["MG1655-K12"][0])
    ecoli = x[y == 0].numpy().astype(np.uint8)
    strands = [_text(w) in ref for w in ecoli]
    assert 0 < sum(strands) < len(strands)  # some forward, some reverse-complemented
    with pytest.raises(ValueError, match="batch=6: must be a multiple of 4"):
        task.train_batch(6, np.random.default_rng(0))


def test_task_errors():
    genomes = _genomes()
    with pytest.raises(ValueError, match="length=4"):
        GenusTask(4, genomes=genomes)
    with pytest.raises(GenomicsDataError, match=r"H.Pylori test \(Puno120\): no window of length 500"):
        GenusTask(500, genomes={**genomes, "Puno120": [genomes["Puno120"][0][:450]]})
    with pytest.raises(GenomicsDataError, match="DH1"):
        GenusTask(32, genomes={k: v for k, v in genomes.items() if k != "DH1"})
    with pytest.raises(ValueError, match="split='train'"):
        GenusTask(32, genomes=genomes).fixed("train", 2)


@pytest.mark.parametrize("name", MODELS)
def test_classifier_shapes_and_backward(name):
    model = build_classifier(name, 4)
    x = torch.randint(0, 4, (3, 45))
    out = model(x)
    assert out.shape == (3, 4)
    out.sum().backward()
    unused = {"lm.head.weight"}  # the LM head: pretraining only
    assert all(p.grad is not None for n, p in model.named_parameters() if n not in unused), name


@pytest.mark.parametrize("name", ["lmm", "mac", "mag", "mal", "transformer", "swa"])
def test_streamed_classification_equals_one_call(name):
    model = build_classifier(name, 4).double().eval()
    x = torch.randint(0, 4, (2, 70))
    with torch.no_grad():
        whole = model(x)
        for piece in (1, 13, 32):
            assert torch.allclose(model(x, piece=piece), whole, rtol=1e-10, atol=1e-12), piece
    with pytest.raises(ValueError, match="piece=0"):
        model(x, piece=0)


def test_kmer_counts_by_hand():
    model = KmerLinear(4, k=2)
    with torch.no_grad():
        model.linear.weight.copy_(torch.eye(4, 16))
        model.linear.bias.zero_()
    x = torch.tensor([[0, 0, 1, 4, 3, 0]])  # AA AC (CN) (NT) TA: 3 valid 2-mers
    logits = model(x)
    # features are frequencies x 16: AA = index 0, AC = 1, TA = 12 -> each 1/3 * 16
    assert torch.allclose(logits, torch.tensor([[16 / 3, 16 / 3, 0.0, 0.0]]))


def _run(tmp_path, model="cnn", **kw):
    task = GenusTask(32, genomes=_genomes())
    args = dict(out=str(tmp_path), length=32, steps=6, batch=8, eval_every=2, val_per_class=5, test_per_class=10,
                task=task, progress=False, log=lambda *_: None)
    return run(model, **{**args, **kw})


def test_run_selects_by_validation_and_scores_test(tmp_path):
    res = _run(tmp_path)
    assert [c["step"] for c in res["curve"]] == [2, 4, 6]
    assert all(c["grad_norm_max"] > 0 for c in res["curve"])
    best = max(res["curve"], key=lambda c: c["val_acc"])
    assert res["val_acc"] == best["val_acc"] and res["test"]["n"] == 40
    assert sum(map(sum, res["test"]["confusion"])) == 40 and set(res["test"]["per_class"]) == set(GENERA)
    assert res["data"]["test"]["H.Pylori"]["genomes"] == ["Puno120"]


def test_resume_after_an_interruption_is_the_same_run(tmp_path):
    full = _run(tmp_path / "a", model="transformer", pretrain_steps=2)
    task = GenusTask(32, genomes=_genomes())
    real, calls = task.train_batch, []

    def failing(n, rng):
        calls.append(1)
        if len(calls) == 6:  # after the checkpoint at step 4 (2 pretraining + 2 training)
            raise KeyboardInterrupt
        return real(n, rng)

    task.train_batch = failing
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", model="transformer", pretrain_steps=2, task=task)
    assert os.path.exists(tmp_path / "b" / "transformer_s0_pt2.ckpt.pt")
    task.train_batch = real
    with pytest.raises(ValueError, match=r"trained with \{'batch': 8\}, not \{'batch': 4\}"):  # another run
        _run(tmp_path / "b", model="transformer", pretrain_steps=2, task=task, batch=4)
    resumed = _run(tmp_path / "b", model="transformer", pretrain_steps=2, task=task)
    assert resumed["curve"] == full["curve"] and resumed["test"] == full["test"]
    assert [c["val_acc"] is None for c in full["curve"]] == [True, False, False, False]


def test_run_errors(tmp_path):
    with pytest.raises(ValueError, match="pretrain_steps=5: model 'cnn' has no language-model backbone"):
        _run(tmp_path, pretrain_steps=5)
    with pytest.raises(ValueError, match="model='rnn'"):
        _run(tmp_path, model="rnn")
    with pytest.raises(ValueError, match="steps=0"):
        _run(tmp_path, steps=0)
    with pytest.raises(ValueError, match="length=64: the task given has windows of 32"):
        _run(tmp_path, length=64)
    with pytest.raises(ValueError, match="model='cnn-slowforget'"):
        _run(tmp_path, model="cnn-slowforget")
    with pytest.raises(ValueError, match="model 'swa-noconv': swa has no neural memory"):
        _run(tmp_path, model="swa-noconv")
    with pytest.raises(ValueError, match="device='gpu0': not a device"):
        _run(tmp_path, device="gpu0")


def test_ablated_variants_change_only_what_they_name():
    # the committed tables' forget-gate start for the plain variants, the library default for -slowforget
    assert build_classifier("mac", 4).lm.cfg.memory.alpha_init == STUDY_ALPHA_INIT
    slow = build_classifier("mac-slowforget", 4).lm.cfg
    assert slow.memory.alpha_init == 1e-3
    assert replace(slow, memory=replace(slow.memory, alpha_init=STUDY_ALPHA_INIT)) == build_classifier("mac", 4).lm.cfg
    assert build_classifier("mag-nopersist", 4).lm.cfg.n_persistent == 0


def test_report_and_cli(tmp_path, capsys):
    from titans.cli import main

    res = _run(tmp_path)
    with open(tmp_path / "cnn_s0.json", "w") as f:
        json.dump(res, f)
    table = report(str(tmp_path))
    assert "| cnn (seed 0) |" in table and "25%" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.png").exists()
    main(["genomics", "--report", str(tmp_path)])
    with pytest.raises(SystemExit):  # a finished run of other settings is not skipped as this one (before the data)
        main(["genomics", "--model", "cnn", "--steps", "7", "--batch", "8", "--length", "32", "--data-root",
              str(tmp_path / "none"), "--out", str(tmp_path)])
    assert "was run with {'steps': 6}, not {'steps': 7}" in capsys.readouterr().err
    with pytest.raises(GenomicsDataError, match="make genomics-data"):
        main(["genomics", "--model", "kmer", "--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit):  # before the data: the folder is missing too
        main(["genomics", "--model", "kmer", "--device", "gpu0", "--data-root", str(tmp_path / "none")])
