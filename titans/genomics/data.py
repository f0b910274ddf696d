"""Genus of origin of a DNA window: a GenomicBenchmarks-style classification task from whole bacterial genomes.

The paper's Table 4 uses GenomicBenchmarks (Grešová et al. 2023), whose data is fetched from Zenodo and needs the
human reference genome, so it cannot be installed offline (``../shared/DATA.md`` §4). This task is our own design
on real sequences that do install offline: seventeen complete genomes of four bacterial genera from Debian's
``ragout-examples`` and ``bowtie-examples`` packages (``make genomics-data``: ``apt-get download`` and ``dpkg -x``,
no root). A window of ``length`` nucleotides (default 200, as in GenomicBenchmarks' ``demo_human_or_worm``) is
classified into one of ``GENERA``.

Whole strains are held out (``SPLITS``): each genus has its training strains, one validation strain and one test
strain, so a test accuracy measures what carries over to a strain the model never saw, not memorized positions.
(E. coli DH1, its validation strain, is a K-12 derivative and so close to the training strain MG1655; its test
strain, 536, is from another phylogroup.) Both strands are used: a window is reverse-complemented with probability
1/2. Windows that contain anything but A, C, G, T are not drawn.

Tokens: ``A C G T -> 0 1 2 3``, anything else ``4`` (``VOCAB = 5``).
"""

from __future__ import annotations

import functools
import gzip
import os
import sys
from dataclasses import dataclass

import numpy as np

GENERA = ("E.Coli", "V.Cholerae", "S.Aureus", "H.Pylori")
VOCAB = 5
_RAGOUT = "usr/share/doc/ragout/examples"
FILES = {  # genome name: path under the data root
    "MG1655-K12": f"{_RAGOUT}/E.Coli/references/MG1655-K12.fasta.gz",
    "DH1": f"{_RAGOUT}/E.Coli/references/DH1.fasta.gz",
    "536": "usr/share/doc/bowtie/examples/genomes/NC_008253.fna.gz",
    **{g: f"{_RAGOUT}/V.Cholerae/references/{g}.fasta.gz" for g in ("O1_biovar", "O395", "O1_Inaba", "H1")},
    **{g: f"{_RAGOUT}/S.Aureus/references/{g}.fasta.gz" for g in ("COL", "N315", "USA300_FPR3757", "RF122",
                                                                   "JKD6008")},
    **{g: f"{_RAGOUT}/H.Pylori/references/{g}.fasta.gz" for g in ("G27", "Gambia94_24", "SJM180", "ELS37",
                                                                   "Puno120")},
}
SPLITS = {  # genus: {split: genomes}
    "E.Coli": {"train": ("MG1655-K12",), "val": ("DH1",), "test": ("536",)},
    "V.Cholerae": {"train": ("O1_biovar", "O395"), "val": ("O1_Inaba",), "test": ("H1",)},
    "S.Aureus": {"train": ("COL", "N315", "USA300_FPR3757"), "val": ("RF122",), "test": ("JKD6008",)},
    "H.Pylori": {"train": ("G27", "Gambia94_24", "SJM180"), "val": ("ELS37",), "test": ("Puno120",)},
}
_CODE = np.full(256, 4, dtype=np.uint8)
for _i, _c in enumerate(b"ACGT"):
    _CODE[_c], _CODE[ord(chr(_c).lower())] = _i, _i


class GenomicsDataError(ValueError):
    """Missing or unusable genome files; the message names the file and the problem."""


def data_root(root: str | None = None) -> str:
    """The folder holding ``usr/share/doc/...``: ``root``, else ``$TITANS_GENOMICS_DIR``, else where ``make
    genomics-data`` unpacks (``<sys.prefix>/share/titans-genomics``), else ``/`` (a system ``apt-get install``)."""
    if root:
        cands = [root]
    else:
        env = os.environ.get("TITANS_GENOMICS_DIR") or None  # set but empty: unset
        cands = [env] if env else [os.path.join(sys.prefix, "share", "titans-genomics"), "/"]
    for c in cands:
        if all(os.path.isfile(os.path.join(c, p)) for p in FILES.values()):
            return c
    c = cands[0]
    missing = [p for p in FILES.values() if not os.path.isfile(os.path.join(c, p))]
    raise GenomicsDataError(f"genomics data root {c!r}: {len(missing)} of {len(FILES)} genome files missing (first: "
                            f"{missing[0]}); run `make genomics-data` (apt-get download ragout-examples "
                            "bowtie-examples, then dpkg -x), or set TITANS_GENOMICS_DIR / --data-root to the folder "
                            "they were unpacked into")


def read_fasta(path: str) -> list[np.ndarray]:
    """The records of a (gzipped) FASTA file as token arrays (``uint8``, ``A C G T -> 0..3``, else 4)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise GenomicsDataError(f"{path}: unreadable ({exc})") from exc
    if not raw.startswith(b">"):
        raise GenomicsDataError(f"{path}: not FASTA (the first byte is {raw[:1]!r}, expected '>')")
    records = []
    for block in raw[1:].split(b"\n>"):
        seq = b"".join(block.split(b"\n")[1:]).replace(b"\r", b"").replace(b" ", b"")
        if seq:
            records.append(_CODE[np.frombuffer(seq, dtype=np.uint8)])
    if not records:
        raise GenomicsDataError(f"{path}: no sequence")
    return records


@functools.lru_cache(maxsize=2)
def load_genomes(root: str | None = None) -> dict[str, list[np.ndarray]]:
    """Every genome of :data:`FILES`, read once per process: ``{name: [record tokens]}``."""
    root = data_root(root)
    return {name: read_fasta(os.path.join(root, path)) for name, path in FILES.items()}


def reverse_complement(x: np.ndarray) -> np.ndarray:
    """``[..., T]`` tokens of the other strand (``A<->T``, ``C<->G``, read backwards); ``N`` stays ``N``."""
    return np.where(x < 4, 3 - x, x)[..., ::-1].astype(x.dtype)


@dataclass
class _Source:
    """The windows one (genus, split) can give: every start in every record where ``length`` tokens are all ACGT."""

    records: list[np.ndarray]
    count: int  # valid window starts

    @classmethod
    def build(cls, records: list[np.ndarray], length: int) -> _Source:
        count = 0
        for r in records:
            if len(r) >= length:
                bad = np.concatenate([[0], np.cumsum(r == 4, dtype=np.int32)])  # windows [s, s + length) with no N
                count += int((bad[length:] == bad[:-length]).sum())
        return cls(records, count)

    def draw(self, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` windows ``[n, length]``, each start uniform over all valid starts (a start whose window holds an N
        is drawn again), each strand with probability 1/2."""
        spans = np.array([max(0, len(r) - length + 1) for r in self.records], dtype=np.int64)
        ends = np.cumsum(spans)
        out = np.empty((n, length), dtype=np.uint8)
        filled = 0
        while filled < n:
            flat = rng.integers(0, ends[-1], n - filled)
            rec = np.searchsorted(ends, flat, side="right")
            for r, s in zip(rec, flat - (ends[rec] - spans[rec])):
                w = self.records[r][s:s + length]
                if not (w == 4).any():
                    out[filled] = w
                    filled += 1
        flip = rng.random(n) < 0.5
        out[flip] = reverse_complement(out[flip])
        return out


class GenusTask:
    """Windows of ``length`` nucleotides labelled with their genus, strains held out per split (:data:`SPLITS`).

    ``train_batch(n, rng)`` draws a fresh class-balanced batch (so training never sees a window twice in expectation);
    ``fixed(split, per_class, seed)`` is a reproducible class-balanced set for validation or test.
    Both return ``(tokens [N, length] int64, labels [N] int64)``.
    """

    def __init__(self, length: int = 200, *, root: str | None = None, genomes: dict | None = None):
        if not isinstance(length, int) or length < 8:
            raise ValueError(f"length={length!r}: must be an int >= 8 (nucleotides per window)")
        self.length = length
        genomes = genomes if genomes is not None else load_genomes(root)
        missing = [g for sp in SPLITS.values() for names in sp.values() for g in names if g not in genomes]
        if missing:
            raise GenomicsDataError(f"genomes {missing} missing (have {sorted(genomes)})")
        self.sources = {split: [_Source.build([r for g in SPLITS[genus][split] for r in genomes[g]], length)
                                for genus in GENERA] for split in ("train", "val", "test")}
        for split, srcs in self.sources.items():
            for genus, s in zip(GENERA, srcs):
                if s.count == 0:
                    raise GenomicsDataError(f"{genus} {split} ({', '.join(SPLITS[genus][split])}): no window of "
                                            f"length {length} without N")

    def _draw(self, split: str, per_class: int, rng: np.random.Generator):
        x = np.concatenate([s.draw(per_class, self.length, rng) for s in self.sources[split]])
        y = np.repeat(np.arange(len(GENERA)), per_class)
        return x, y

    def train_batch(self, n: int, rng: np.random.Generator):
        if n % len(GENERA):
            raise ValueError(f"batch={n}: must be a multiple of {len(GENERA)} (class-balanced batches)")
        x, y = self._draw("train", n // len(GENERA), rng)
        order = rng.permutation(n)
        return _tensors(x[order], y[order])

    def fixed(self, split: str, per_class: int, seed: int = 0):
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r}: must be 'val' or 'test'")
        return _tensors(*self._draw(split, per_class, np.random.default_rng([seed, 1 + (split == "test")])))

    def describe(self) -> dict:
        """Genomes and window counts per (split, genus), for the results file."""
        return {split: {genus: {"genomes": list(SPLITS[genus][split]), "windows": int(s.count)}
                        for genus, s in zip(GENERA, srcs)} for split, srcs in self.sources.items()}


def _tensors(x: np.ndarray, y: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x).astype(np.int64)), torch.from_numpy(y.astype(np.int64))
