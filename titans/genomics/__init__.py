"""DNA sequence classification with the neural memory (paper §5.5 / Table 4), on genomes that install offline."""

from .data import GENERA, SPLITS, VOCAB, GenomicsDataError, GenusTask, data_root, load_genomes, read_fasta

__all__ = ["GENERA", "SPLITS", "VOCAB", "GenomicsDataError", "GenusTask", "data_root", "load_genomes", "read_fasta"]
