"""matplotlib's pyplot on the file-only ``Agg`` backend, or None where matplotlib is not installed (the ``plot``
extra): every figure in the library is optional and is skipped without it."""

from __future__ import annotations


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
