"""Freed movie-sized arrays reused instead of mapped anew, for the length of the fit.

The fit makes and frees some thirty arrays the size of the movie (443 MB each at 608² × 300
frames). glibc serves each from a fresh ``mmap`` and unmaps it on ``free``, so every one is
paid again in page faults when first written: 3.2 million faults, a quarter of the fit's CPU
time as system time on a 2-core machine (BENCHMARKS.md, "Initialisation at 608², fifth pass").
:func:`reuse_freed_memory` makes glibc take large blocks from its heap for the duration of a
``with`` block and keep what is freed there (no mmap, no trimming), so the next array of the
same size lands on pages already mapped; afterwards the defaults come back and the freed heap
is returned to the system (``malloc_trim``), so a long session does not keep the fit's peak.

Process-wide while active (every thread's large allocations take the heap); elsewhere than
glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading

logger = logging.getLogger(__name__)

# mallopt parameters and glibc's defaults (malloc/malloc.c)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int

_lock = threading.Lock()
_depth = 0  # nested / concurrent fits share one activation


def _libc():
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: glibc's malloc on Linux
    except (OSError, TypeError):  # (Windows has no such handle)
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


@contextlib.contextmanager
def reuse_freed_memory():
    """Within the block, large allocations come from the heap and freed ones stay there."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1 and _LIBC is not None:
            ok = _LIBC.mallopt(_M_MMAP_MAX, 0) and _LIBC.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
            if not ok:
                logger.debug("mallopt refused; the fit allocates as usual")
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _LIBC is not None:
                _LIBC.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                _LIBC.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                _LIBC.malloc_trim(0)
