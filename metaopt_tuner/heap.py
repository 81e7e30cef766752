"""Freed memory handed back to the operating system between chunks of work.

glibc's malloc keeps what a process frees for reuse, and once large blocks have been freed it
serves blocks of up to 32 MiB from its heap instead of mapping them (its mmap threshold rises).
Adapting chunk after chunk of held-out tasks then left the heap more fragmented with every chunk:
an intents encoder artifact's peak resident memory grew with the number of tasks, not with the
chunk (0.94 GiB at 100 tasks, 1.22 GiB at 1,000; docs/benchmarks.md, "Evaluation memory").
:func:`release_freed_memory` (glibc's ``malloc_trim``) gives the free pages back after each chunk.
It changes no setting of the process; where the C library has no ``malloc_trim`` (macOS, Windows,
musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

__all__ = ["release_freed_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, TypeError, AttributeError):  # no such symbol, or no dlopen(NULL)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return the free pages of the process's heap to the operating system; whether the C
    library could (glibc). Live memory is untouched."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
