"""A results-writing session to kill: ``python -m tests.online_cnmfe.results.killable_writer``.

Writes ``--frames`` frames of ``--neurons`` neurons (a third of them removed half-way, so the
close has rows to realign), with extra groups as other features add them (``hooked/``,
``curation/``, a per-neuron ``neurons/quality``), printing ``flushed N`` after each flush,
``closing`` right before ``ResultsWriter.close()`` and ``closed`` after it. The traces are a
known function of (neuron id, frame), so a reader can check every value it gets back.

Options for fault injection: ``--fake-free-bytes N`` makes the free-space checks see N bytes
(to reach a real ENOSPC on a small file system), ``--min-free-bytes`` sets the reserve.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import scipy.sparse

DIMS = (24, 20)


def trace_value(neuron_id, frame):
    return (np.asarray(neuron_id) * 1000.0 + np.asarray(frame)).astype(np.float32)


def _prepare(f) -> None:
    f.create_group("hooked").create_dataset(
        "shifts", (0, 2), np.float32, maxshape=(None, 2), chunks=(256, 2)
    )
    cur = f.create_group("curation")
    cur.attrs["note"] = "kept by every rewrite"
    cur.create_dataset("labels", data=np.array([7, 8, 9], np.int64))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("--neurons", type=int, default=60)
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--flush-every", type=int, default=250)
    p.add_argument("--min-free-bytes", type=int, default=1 << 20)
    p.add_argument("--fake-free-bytes", type=int, default=None)
    args = p.parse_args(argv)

    from online_cnmfe.model.frame_result import FrameResult
    from online_cnmfe.params import CNMFEParams
    from online_cnmfe.results import finalise, writer
    from online_cnmfe.results.writer import ResultsWriter, StoreError

    if args.fake_free_bytes is not None:
        fake = args.fake_free_bytes
        finalise.free_bytes = writer.free_bytes = lambda _folder: fake  # noqa: E731

    params = CNMFEParams.from_dict({"engine": {"flush_period_s": 1e6}})
    ids_all = np.arange(1, args.neurons + 1, dtype=np.int64)
    w = ResultsWriter(
        args.path, DIMS, params, 20.0, {"source": "killable_writer"}, block_frames=64,
        min_free_bytes=args.min_free_bytes, prepare=_prepare,
        flush_hooks=[_shift_hook],
    )  # fmt: skip
    try:
        for t in range(args.frames):
            ids = ids_all if t < args.frames // 2 else ids_all[ids_all % 3 != 0]
            x = trace_value(ids, t)
            w.append_frame(FrameResult(t, ids, x, x + 0.5, x + 0.25), {"frame_index": t, "seq": t})
            if (t + 1) % args.flush_every == 0:
                w.flush()
                _say("flushed", t + 1)
        final = ids_all[ids_all % 3 != 0]
        dense = np.zeros((DIMS[0] * DIMS[1], final.shape[0]), np.float32)
        dense[final % dense.shape[0], np.arange(final.shape[0])] = 1.0
        w.set_footprints(scipy.sparse.csc_array(dense), final, 1)
        _say("closing")
        w.close()
        _say("closed", "hdf5_failed" if w.hdf5_failed else "ok")
    except StoreError as exc:
        _say("STOREERROR", exc)
        w.close()
        _say("closed", "hdf5_failed" if w.hdf5_failed else "ok")
    sys.stdout.flush()
    os._exit(0)  # HDF5 may crash at interpreter exit after a failed write


def _say(*parts) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def _shift_hook(f) -> None:
    ds = f["hooked/shifts"]
    n = ds.shape[0]
    ds.resize((n + 1, 2))
    ds[n] = (n, -n)


if __name__ == "__main__":
    sys.exit(main())
