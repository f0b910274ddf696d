"""Triton's interpreter without its repeated language patching (test support, imported by ``conftest.py``).

Under ``TRITON_INTERPRET=1`` a kernel launch patches ``triton.language`` for the interpreter once, runs every
program, and restores it. Each call of a ``@triton.jit`` helper from inside the kernel patches it again (Triton 3.x,
``InterpretedFunction.__call__``), walking every member of the language modules: in our kernels, which call small
helpers (ours, and ``tl.sum`` and the like, which see ``triton.language.core``) in their inner loops, that is
over a thousand walks a launch. Inside a launch the language modules already patched (by the launch, or by an earlier
helper: Triton never undoes a helper's patching) stay patched, so a helper that sees only those skips the walk;
anything else (a call outside a launch, the first helper to see another language module) goes through Triton's own
patching unchanged. Results are the same either way: the walk would set the same attributes to equivalent wrappers
again. Where Triton's internals differ from what this expects, nothing is changed.
"""

from __future__ import annotations

import functools
import inspect


def skip_nested_language_patches() -> bool:
    """Install the shortcut; True where it was installed (Triton importable with the internals it expects)."""
    try:
        from triton.runtime import interpreter as it
    except ImportError:
        return False
    patch, scope_cls, executor = (getattr(it, n, None) for n in ("_patch_lang", "_LangPatchScope", "GridExecutor"))
    if patch is None or scope_cls is None or executor is None or getattr(patch, "_titans_shortcut", False):
        return False
    langs = (it.tl, it.tl.core)
    state = {"depth": 0, "patched": None}  # launches in progress; the language modules patched so far in this one

    @functools.cache  # per function: its module's globals name the same modules call after call
    def modules(fn) -> frozenset[int]:
        return frozenset(id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and v in langs)

    def patch_lang(fn):
        want = modules(fn)
        if state["depth"] and state["patched"] is not None and want <= state["patched"]:
            return scope_cls()  # nothing to restore: the launch's own scope restores the language
        scope = patch(fn)
        if state["depth"]:  # the launch's own patching (its first call), or a helper's, which Triton never restores
            state["patched"] = want | (state["patched"] or frozenset())
        return scope

    launch = executor.__call__

    def call(self, *args, **kwargs):
        saved = state["patched"]
        state["depth"] += 1
        state["patched"] = None
        try:
            return launch(self, *args, **kwargs)
        finally:
            state["depth"] -= 1
            state["patched"] = saved

    patch_lang._titans_shortcut = True
    it._patch_lang = patch_lang
    executor.__call__ = call
    return True
