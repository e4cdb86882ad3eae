"""Aligning trace rows with the footprint columns at a clean close, without ever risking the file.

While a session runs, rows of the per-neuron datasets follow ``neurons/neuron_ids`` (every
neuron ever present) and footprint columns ``footprints/neuron_ids`` (the neurons present
now). At a clean close :func:`finalise` puts the rows in footprint-column order and moves the
rows of neurons absent from the final footprints to ``removed/``; :func:`unfinalise` undoes
that when a closed session is resumed. A finalised copy also gets the per-neuron ``quality``
table (:mod:`.quality`), computed from its aligned rows before the rename.

Both write the new file **beside** the original (``<name>.finalising``), flush and fsync it,
then rename it over the original (``os.replace``, atomic on POSIX) and fsync the folder. A
kill at any instant leaves either the old file or the new one, both complete and readable (a
stale ``.finalising`` file is removed by the next writer or :func:`discard_partial`). The
rewrite needs as much free space as the file; with less (plus a reserve) it is skipped with a
warning: the file stays complete and readable, its rows in order of first appearance, and
:func:`~.reader.read_results` aligns them.

Which datasets follow the rows is not hard-coded: every dataset under ``traces/`` or
``neurons/`` whose first dimension is the number of rows. Every other group and dataset of
the file (``frames/``, ``footprints/``, ``triggers/``, ``motion/``, …) is copied unchanged.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from online_cnmfe.errors import OnlineCNMFEError
from online_cnmfe.results.quality import store_quality

logger = logging.getLogger(__name__)

ROW_GROUPS = ("traces", "neurons")  # datasets whose first dimension follows neurons/neuron_ids
PARTIAL_SUFFIX = ".finalising"
DEFAULT_RESERVE_BYTES = 64 * 2**20


class RewriteError(OSError):
    """The aligned copy could not be written (the original file is untouched)."""


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


def discard_partial(path: Path) -> None:
    """Remove the half-written copy a killed :func:`finalise` left beside ``path``."""
    partial = partial_path(Path(path))
    if partial.exists():
        logger.info("removing %s, left by a rewrite that was interrupted", partial)
        partial.unlink()


def free_bytes(folder: Path) -> int | None:
    """Free bytes available to this user in ``folder``'s file system (None if unknown)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def finalise(path: Path, *, reserve_bytes: int = DEFAULT_RESERVE_BYTES, block: int = 4096) -> str:
    """Align the rows with the final footprint columns (atomically, see the module docstring).

    Parameters
    ----------
    path : Path
        A results file closed by its writer (an ordinary HDF5 file).
    reserve_bytes : int
        Free space to leave on the disk beyond the copy itself.
    block : int
        Frames rewritten at once (bounds memory: rows × block × 4 bytes).

    Returns
    -------
    str
        ``"aligned"`` (already aligned: nothing rewritten), ``"rewritten"``, or
        ``"skipped: <reason>"`` (too little free space; the file is left as it was).

    Raises
    ------
    RewriteError
        If writing the copy failed (the original is untouched; the copy is removed).

    Notes
    -----
    The copy is written by a child process (``python -m online_cnmfe.results.finalise``):
    when HDF5 fails a write (a disk that filled up after the free-space check) it leaves its
    library state broken and may crash the process later; the child absorbs that, this
    process only renames a copy that was completely written and synced.
    """
    return _rewrite(Path(path), "finalise", reserve_bytes, block)


def unfinalise(path: Path, *, reserve_bytes: int = DEFAULT_RESERVE_BYTES, block: int = 4096) -> str:
    """Fold ``removed/`` back into the rows (to resume a cleanly closed session).

    Returns ``"aligned"`` when there is nothing to fold, else ``"rewritten"``.

    Raises
    ------
    RewriteError
        If there is not enough free space or the copy cannot be written (the original is
        untouched).
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        if "removed" not in f:
            return "aligned"
    status = _rewrite(path, "unfinalise", reserve_bytes, block)
    if status.startswith("skipped"):
        raise RewriteError(f"cannot resume {path}: {status[len('skipped: ') :]}")
    return status


def _rewrite(path: Path, mode: str, reserve_bytes: int, block: int) -> str:
    need = path.stat().st_size + reserve_bytes
    free = free_bytes(path.parent)
    if free is not None and free < need:
        reason = (
            f"{free / 2**20:.0f} MiB free on the disk of {path.parent}, the aligned copy needs "
            f"{need / 2**20:.0f} MiB"
        )
        logger.warning(
            "%s: rows left in order of first appearance (%s); the file is complete and "
            "read_results aligns it",
            path, reason,
        )  # fmt: skip
        return f"skipped: {reason}"
    tmp = partial_path(path)
    root = str(Path(__file__).resolve().parents[2])  # the same online_cnmfe in the child
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "online_cnmfe.results.finalise", mode, str(path), str(block)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    status = proc.stdout.strip().splitlines()[-1:] or [""]
    if proc.returncode != 0 or status[0] not in ("aligned", "written"):
        _remove_quietly(tmp)
        detail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise RewriteError(f"could not write the aligned copy of {path}: {detail}")
    if status[0] == "aligned":
        return "aligned"
    os.replace(tmp, path)
    _fsync(path.parent)
    return "rewritten"


def _write_copy(path: Path, mode: str, block: int) -> bool:
    """Write the finalised/unfinalised copy of ``path`` beside it and sync it (child process).

    Returns False when there is nothing to change (no copy written).
    """
    tmp = partial_path(path)
    with h5py.File(path, "r") as f:
        row_ids = f["neurons/neuron_ids"][:]
        fp_ids = f["footprints/neuron_ids"][:]
        has_removed = "removed" in f
        has_quality = "quality" in f
        if has_removed:
            gone_ids = f["removed/neuron_ids"][:]
    if mode == "unfinalise":
        if not has_removed:
            return False
        order = np.arange(row_ids.shape[0] + gone_ids.shape[0], dtype=np.int64)
        gone, after, aligned = None, None, False
    else:
        if np.array_equal(row_ids, fp_ids) and has_quality:
            return False  # (with or without removed/: already finalised, quality stored)
        if has_removed:  # rows of an earlier finalise come back into play
            row_ids = np.concatenate([row_ids, gone_ids])
        row_of = {int(nid): r for r, nid in enumerate(row_ids.tolist())}
        order = np.array([row_of.get(int(i), -1) for i in fp_ids.tolist()], np.int64)
        gone = np.setdiff1d(np.arange(row_ids.shape[0]), order[order >= 0])
        after, aligned = _ids_of_new_columns(order, fp_ids), True
    with h5py.File(path, "r") as src, h5py.File(tmp, "w", libver="latest") as dst:
        _copy_aligned(src, dst, order, gone, block)
        if after is not None:
            after(dst)
        if mode == "finalise":
            _store_quality_or_say_why(dst)
        dst.attrs["aligned"] = aligned
    _fsync(tmp)
    return True


def _ids_of_new_columns(order: np.ndarray, fp_ids: np.ndarray):
    def fix(dst: h5py.File) -> None:  # a footprint column without a trace row: id, birth -1
        missing = np.flatnonzero(order < 0)
        if missing.size:
            dst["neurons/neuron_ids"][missing] = fp_ids[missing]
            birth = dst["neurons/birth_frame"][:]
            birth[missing] = -1
            dst["neurons/birth_frame"][...] = birth

    return fix


def _row_datasets(src: h5py.File) -> dict[str, list[str]]:
    """Per row group, the datasets whose first dimension is the number of rows."""
    n_rows = src["neurons/neuron_ids"].shape[0]
    out: dict[str, list[str]] = {}
    for group in ROW_GROUPS:
        out[group] = [
            name
            for name, node in src[group].items()
            if isinstance(node, h5py.Dataset) and node.ndim >= 1 and node.shape[0] == n_rows
        ]
    names = [n for group in out.values() for n in group]
    if len(set(names)) != len(names):
        raise ValueError(f"row datasets share a name across {ROW_GROUPS}: {sorted(names)}")
    return out


def _copy_aligned(src: h5py.File, dst: h5py.File, order, gone, block: int) -> None:
    for key, value in src.attrs.items():
        dst.attrs[key] = value
    rows = _row_datasets(src)
    removed = src.get("removed")
    for name in src:
        if name not in ROW_GROUPS and name != "removed":
            src.copy(src[name], dst, name=name)
    out_removed = dst.create_group("removed") if gone is not None and gone.size else None
    for group in ROW_GROUPS:
        g_src, g_dst = src[group], dst.create_group(group)
        for key, value in g_src.attrs.items():
            g_dst.attrs[key] = value
        for name, node in g_src.items():
            if name not in rows[group]:
                g_src.copy(node, g_dst, name=name)
                continue
            extra = removed[name] if removed is not None and name in removed else None
            _write_rows(node, extra, g_dst, name, order, block)
            if out_removed is not None:
                _write_rows(node, None, out_removed, name, gone, block, resizable=False)


def _write_rows(ds, extra, group, name, order, block, resizable: bool = True) -> None:
    """``group[name][i] = concat(ds, extra)[order[i]]`` (zeros where ``order`` is -1)."""
    rest = ds.shape[1:]
    shape = (order.shape[0], *rest)
    if resizable:
        out = group.create_dataset(
            name, shape, ds.dtype, chunks=ds.chunks or True, maxshape=(None,) * len(shape),
            fillvalue=ds.fillvalue,
        )  # fmt: skip
    else:
        out = group.create_dataset(name, shape, ds.dtype)
    take = order >= 0
    if ds.ndim == 1 or not rest[0]:
        values = np.zeros(shape, ds.dtype)
        both = ds[()] if extra is None else np.concatenate([ds[()], extra[()]])
        values[take] = both[order[take]]
        if values.size:
            out[...] = values
        return
    n_cols = rest[0]
    for t0 in range(0, n_cols, block):
        t1 = min(n_cols, t0 + block)
        chunk = ds[:, t0:t1]
        if extra is not None:
            chunk = np.concatenate([chunk, _columns(extra, t0, t1)])
        values = np.zeros((shape[0], t1 - t0, *rest[1:]), ds.dtype)
        values[take] = chunk[order[take]]
        out[:, t0:t1] = values


def _columns(extra, t0: int, t1: int) -> np.ndarray:
    """Columns t0:t1 of ``extra``, zero-padded when it has fewer columns."""
    have = extra[:, t0 : min(t1, extra.shape[1])]
    if have.shape[1] == t1 - t0:
        return have
    pad = np.zeros((extra.shape[0], t1 - t0 - have.shape[1], *extra.shape[2:]), extra.dtype)
    return np.concatenate([have, pad], axis=1)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _store_quality_or_say_why(f: h5py.File) -> None:
    """Per-neuron quality metrics (derived data: a failure leaves the file valid)."""
    try:
        store_quality(f)
    except (OSError, KeyError, ValueError, OnlineCNMFEError) as exc:
        logger.warning(
            "%s: no quality metrics (%s); `online-cnmfe curate --metrics` retries", f.filename, exc
        )


def main(argv: list[str] | None = None) -> int:
    """Child-process entry: ``python -m online_cnmfe.results.finalise MODE PATH BLOCK``."""
    mode, path, block = (argv if argv is not None else sys.argv[1:])[:3]
    if mode not in ("finalise", "unfinalise"):
        sys.stderr.write(f"unknown mode {mode!r}\n")
        return 2
    try:
        written = _write_copy(Path(path), mode, int(block))
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n".replace("\n,", ","))
        sys.stderr.flush()
        os._exit(1)  # HDF5 may crash at interpreter exit after a failed write
    sys.stdout.write("written\n" if written else "aligned\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
