"""online-cnmfe: real-time cell extraction (online CNMF-E) for 1-photon miniscope imaging.

The model is usable as a library without sockets, files or Qt::

    from online_cnmfe import OnlineCNMFE, CNMFEParams
    model = OnlineCNMFE(CNMFEParams())
    model.initialize(first_frames)          # (T, H, W) array
    result = model.process_frame(frame)     # one (H, W) frame -> FrameResult
"""

from online_cnmfe.version import __version__

__all__ = ["CNMFEParams", "OnlineCNMFE", "__version__"]


def __getattr__(name):
    # Lazy imports keep `online-cnmfe --help` fast (numba compiles on first use).
    if name == "OnlineCNMFE":
        from online_cnmfe.api import OnlineCNMFE

        return OnlineCNMFE
    if name == "CNMFEParams":
        from online_cnmfe.params import CNMFEParams

        return CNMFEParams
    raise AttributeError(f"module 'online_cnmfe' has no attribute {name!r}")
