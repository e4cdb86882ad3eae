"""``online-cnmfe batch``: many recordings, one task each, on Dask distributed.

:mod:`.plan` turns inputs and a manifest into :class:`~.plan.SessionTask` objects (plain data,
validated before any cluster starts); :mod:`.task` runs one on a worker through the same
:func:`~online_cnmfe.offline.process.process_recording` as ``online-cnmfe process``;
:mod:`.summary` keeps ``summary.csv``; :mod:`.runner` owns the Dask client, retries, progress
and cancellation (the only module that imports Dask).
"""
