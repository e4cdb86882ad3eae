"""The streaming service (``online-cnmfe run``): threads, queues, sockets, storage.

:mod:`.receive` (frame socket → queue, the ledger of frame indices), :mod:`.frame_queue` and
:mod:`.spool` (memory, then disk: nothing dropped while the model initialises or catches up),
:mod:`.model_runner` (the model thread's work), :mod:`.incidents` (stream incidents → counts,
events, bookkeeping), :mod:`.stopping` (draining, early initialisation, leftovers),
:mod:`.publish` (results socket), :mod:`.store_worker` (results file and checkpoints on their
own thread), :mod:`.raw_recorder` (``engine.record_raw``), :mod:`.service` (:class:`Engine`,
wiring them).
"""


def __getattr__(name):
    if name in ("Engine", "EngineConfig"):
        from online_cnmfe.engine import service

        return getattr(service, name)
    raise AttributeError(f"module 'online_cnmfe.engine' has no attribute {name!r}")
