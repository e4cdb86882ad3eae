"""An independent ground-truth generator of 1-photon movies and the held-out regime bench.

Written from scratch in the spirit of the CNMF-E paper's simulations (Zhou et al. 2018, eLife),
deliberately **not** sharing code or modelling choices with ``acquisition/simulator*.py``, so
that a detector tuned on the project's simulator can be measured on movies it has never seen.

Modules
-------
params
    :class:`HeldoutParams`, every knob of a movie (validated, JSON round trip).
scene
    Spatial content: footprints, placement, static background, blobs, neuropil, lens mask.
activity
    Temporal content: spikes, calcium kinetics, background fluctuations, motion, corruption.
generator
    :class:`HeldoutMovie` (render any frame range) and :func:`write_movie` (streaming HDF5 in
    the project's simulation format, docs/simulation-format.md).
regimes
    The named regimes of the bench (``benchmarks/bench_regimes.py``).
"""
