"""Checks on an output file before a command starts: overwrite policy, writability, free space.

``run``, ``process`` and ``export`` call :func:`check_output` before they read a frame, so a
read-only folder or a nearly full disk is a one-line error at once, not after an
initialisation of minutes; an existing file is replaced only with ``--overwrite`` (the same
rule for every command).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from online_cnmfe.errors import ConfigError
from online_cnmfe.results.finalise import free_bytes

MiB = 2**20
WRITER_RESERVE_BYTES = 64 * MiB  # ResultsWriter's default min_free_bytes
BYTES_PER_FRAME_PER_NEURON = 12  # C, S and C_raw in float32


def estimate_results_bytes(n_frames: int, n_neurons: int = 200) -> int:
    """A results file's size for ``n_frames`` frames of ``n_neurons`` neurons (traces dominate)."""
    return int(n_frames) * (BYTES_PER_FRAME_PER_NEURON * int(n_neurons) + 48) + 4 * MiB


def check_output(
    path: Path, *, overwrite: bool, need_bytes: int, flag: str = "--out", also: str = "",
    inputs: tuple[Path, ...] = (),
) -> None:  # fmt: skip
    """Refuse (ConfigError, one line) an output that cannot be written as asked.

    Parameters
    ----------
    path : Path
        The file to write.
    overwrite : bool
        Whether an existing file may be replaced.
    need_bytes : int
        Free space the command needs on that disk (an estimate; the writer keeps checking).
    flag : str
        The option that named the file, for the message.
    also : str
        Other ways out, appended to the "exists" message (e.g. ``"--resume to continue it"``).
    inputs : tuple of Path
        Files the command reads: writing over one of them is refused even with ``overwrite``.

    Raises
    ------
    ConfigError
        The file exists (without ``overwrite``) or is a folder; the folder is missing or not
        writable; the disk has less free space than ``need_bytes``.
    """
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name")
    for source in inputs:
        if path.exists() and Path(source).exists() and os.path.samefile(path, source):
            raise ConfigError(f"{flag} {path} is the input file itself; give another name")
    if path.exists() and not overwrite:
        ways = " or ".join(w for w in (also, "--overwrite to replace it") if w)
        raise ConfigError(f"{flag} {path} exists; pass {ways}")
    if not folder.is_dir():
        raise ConfigError(f"the folder of {flag} ({folder}) does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".online-cnmfe-probe-")
        os.close(fd)
        os.unlink(probe)
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is read-only")
    except OSError as exc:
        raise ConfigError(
            f"cannot write {flag} {path}: {exc.strerror or exc}; choose a writable folder"
        ) from None
    free = free_bytes(folder)
    if free is not None and free < need_bytes:
        raise ConfigError(
            f"the disk of {flag} {path} has {free / MiB:.0f} MiB free; this needs about "
            f"{need_bytes / MiB:.0f} MiB. Free space or choose another disk"
        )
