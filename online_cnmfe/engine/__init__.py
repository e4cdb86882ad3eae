"""The streaming service (``online-cnmfe run``): threads, queues, sockets, storage.

:mod:`.receive` (frame socket → queue), :mod:`.model_runner` (the model thread's work),
:mod:`.publish` (results socket), :mod:`.store_worker` (results file and checkpoints on their
own thread), :mod:`.service` (:class:`Engine`, wiring them).
"""


def __getattr__(name):
    if name in ("Engine", "EngineConfig"):
        from online_cnmfe.engine import service

        return getattr(service, name)
    raise AttributeError(f"module 'online_cnmfe.engine' has no attribute {name!r}")
