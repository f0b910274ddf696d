"""Seeded synthetic tasks: S-NIAH (RULER-style), bAbI-like facts in a haystack (BABILong-style), MQAR, and the MAD
tasks (in-context recall, noisy and fuzzy recall, selective copying, memorization)."""

from .babi import TASKS as BABI_TASKS
from .babi import BabiExample, make_babi
from .mad import KINDS as MAD_KINDS
from .mad import make_mad
from .mqar import make_mqar
from .niah import KINDS as NIAH_KINDS
from .niah import NeedleExample, make_niah

__all__ = ["BABI_TASKS", "BabiExample", "make_babi", "MAD_KINDS", "make_mad", "make_mqar", "NIAH_KINDS",
           "NeedleExample", "make_niah"]
