"""Keep Python's full garbage collections off the frame path while the engine runs.

CPython's cyclic garbage collector occasionally runs a *full* (generation 2) collection, which
traverses every tracked object of the process: the libraries' (numba, scipy, h5py, zmq: a few
hundred thousand objects) and the model's. It holds the GIL throughout, on whichever thread
allocated last, so the model thread stops with it: 30–90 ms at 256² and 608² (BENCHMARKS.md
"The end-to-end tail, stage by stage"). Once the model is ready, :func:`freeze` collects
once and moves every surviving object to the permanent generation (:func:`gc.freeze`): later
full collections traverse only what was allocated since, as cheap as a generation-1 one.
:func:`thaw` at shutdown gives them back to the collector (an engine run inside a larger
process, e.g. the tests, does not keep its garbage forever).
"""

from __future__ import annotations

import gc
import logging
import time

logger = logging.getLogger(__name__)


def freeze() -> int:
    """Collect, then freeze every object alive (idempotent; call between frames).

    Returns
    -------
    int
        Objects in the permanent generation afterwards.
    """
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    n = gc.get_freeze_count()
    logger.info(
        "froze %d objects for the run (%.0f ms): full garbage collections skip them",
        n, 1e3 * (time.perf_counter() - t0),
    )  # fmt: skip
    return n


def thaw() -> None:
    """Give the frozen objects back to the garbage collector (at shutdown)."""
    gc.unfreeze()
