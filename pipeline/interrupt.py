"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt in whatever code runs when SIGINT arrives. When that is a garbage
collector callback (JAX, which litert-torch loads, registers one), Python prints "Exception ignored
in: <function _xla_gc_callback ...>" and drops it, and the run goes on as if nothing was pressed. The
CLI installs `on_sigint`, which records the signal as well as raising; training loops call `check()`
between batches, which raises it again if it was dropped. The dropped one's traceback, which Python
prints through `sys.unraisablehook`, is not shown: the user sees the interruption once, as usual.
"""
from __future__ import annotations

import signal
import sys

_requested = False  # process-wide, as signals are


def _on_sigint(signum, frame) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def _unraisable(unraisable) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _requested:
        return  # a Ctrl-C Python could not raise where it landed; check() raises it again
    sys.__unraisablehook__(unraisable)


def install() -> None:
    """Record Ctrl-C as well as raise it, from now on (a command run before in this process, e.g. by a
    test, may have been interrupted); a SIGINT the process ignores (a background job) stays ignored."""
    global _requested
    _requested = False
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _on_sigint):
        signal.signal(signal.SIGINT, _on_sigint)
        sys.unraisablehook = _unraisable


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed, in case the first one was dropped."""
    if _requested:
        raise KeyboardInterrupt
