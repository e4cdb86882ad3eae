"""Processing a whole recording in one process, without sockets: the core of ``process``.

:mod:`.process` holds :func:`process_recording` (source → ``OnlineCNMFE`` → ``ResultsWriter``),
called by ``online-cnmfe process`` for one file; anything that processes recordings offline
(e.g. a batch over an archive) calls the same function.
"""
