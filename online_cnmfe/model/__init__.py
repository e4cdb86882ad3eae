"""The model: the online CNMF-E numerical core, usable as a library.

No sockets, files or Qt are imported anywhere below this package (checked by the import
contracts in ``pyproject.toml``). Sub-packages and modules by job:

- :mod:`~online_cnmfe.model.online`: :class:`OnlineCNMFE`, the update schedule (per frame:
  background → traces → deconvolution → residual; then the slow path);
- :mod:`~online_cnmfe.model.state`, :mod:`~online_cnmfe.model.build`,
  :mod:`~online_cnmfe.model.updates`: the evolving state, how it is built from an initial fit,
  and how slow-path updates are applied to it atomically;
- :mod:`~online_cnmfe.model.initialization`: the batch CNMF-E fit on the first frames;
- :mod:`~online_cnmfe.model.slow_path`: statistics, footprint/background refresh, detection,
  merging (amortised over frames);
- :mod:`~online_cnmfe.model._kernels`: numba kernels, pure functions on arrays.
"""


def __getattr__(name):
    # Lazy so that importing a data type (FrameResult) does not import numba's kernels.
    if name == "OnlineCNMFE":
        from online_cnmfe.model.online import OnlineCNMFE

        return OnlineCNMFE
    if name in ("FrameResult", "ModelEvent"):
        from online_cnmfe.model import frame_result

        return getattr(frame_result, name)
    if name == "InitResult":
        from online_cnmfe.model.init_result import InitResult

        return InitResult
    raise AttributeError(f"module 'online_cnmfe.model' has no attribute {name!r}")
