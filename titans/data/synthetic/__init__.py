"""Seeded synthetic tasks: S-NIAH (RULER-style), bAbI-like facts in a haystack (BABILong-style), MQAR."""

from .babi import TASKS as BABI_TASKS
from .babi import BabiExample, make_babi
from .mqar import make_mqar
from .niah import KINDS as NIAH_KINDS
from .niah import NeedleExample, make_niah

__all__ = ["BABI_TASKS", "BabiExample", "make_babi", "make_mqar", "NIAH_KINDS", "NeedleExample", "make_niah"]
