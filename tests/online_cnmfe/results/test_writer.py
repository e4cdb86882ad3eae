"""The results store: layout, alignment of traces with footprints, crash safety, failures."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse

from online_cnmfe.model.frame_result import FrameResult
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results.reader import read_results
from online_cnmfe.results.recovery import recover_results
from online_cnmfe.results.writer import ResultsWriter, StoreError

DIMS = (12, 10)
REPO = Path(__file__).resolve().parents[3]


def _result(t: int, ids: list[int], skipped: bool = False) -> FrameResult:
    ids_arr = np.asarray(ids, np.int64)
    base = (ids_arr * 1000 + t).astype(np.float32)
    return FrameResult(
        frame_index=t,
        neuron_ids=ids_arr,
        C=base,
        S=base + 0.5,
        C_raw=base + 0.25,
        skipped=skipped,
        skip_reason="NaN pixels" if skipped else "",
    )


def _meta(t: int) -> dict:
    return {
        "frame_index": 100 + t,
        "seq": 7 + t,
        "daq_frame": None if t % 2 else 50 + t,
        "t_acq_ms": 50.0 * t,
        "latency_ms": 1.0 + t / 10,
    }


def _footprints(ids: list[int], rng: np.random.Generator) -> scipy.sparse.csc_array:
    n_pixels = DIMS[0] * DIMS[1]
    dense = np.zeros((n_pixels, len(ids)), np.float32)
    for k, nid in enumerate(ids):
        dense[(nid * 7) % n_pixels, k] = 1.0 + nid
        dense[rng.integers(n_pixels), k] = 0.5
    return scipy.sparse.csc_array(dense)


def test_round_trip_with_births_removals_and_bookkeeping(tmp_path, rng):
    path = tmp_path / "r.h5"
    params = CNMFEParams()
    schedule = {0: [1, 2, 3], 40: [1, 2, 3, 9], 70: [1, 3, 9]}  # 9 born at 40, 2 removed at 70
    with ResultsWriter(path, DIMS, params, 20.0, {"source": "test"}, block_frames=16) as w:
        ids = schedule[0]
        for t in range(100):
            ids = schedule.get(t, ids)
            w.append_frame(_result(t, ids, skipped=(t == 55)), _meta(t))
        A = _footprints([1, 3, 9], rng)
        w.set_footprints(A, np.array([1, 3, 9]), version=4)
        b0 = rng.random(DIMS).astype(np.float32)
        w.set_background(b0)
        w.record_drop(5, 8)
        w.record_reject(42, "wrong shape (5, 5)")
        assert w.n_frames == 100
    with h5py.File(path, "r") as f:  # a cleanly closed file opens without SWMR
        assert f.attrs["complete"]
        assert f["traces/C"].shape == (3, 100)  # rows aligned with the final footprints
        np.testing.assert_array_equal(f["removed/neuron_ids"], [2])
    from online_cnmfe.evaluation.files import read_result  # the evaluator reads it as it is

    ev = read_result(path)
    np.testing.assert_array_equal(ev["C"][2, 40:], 9000 + np.arange(40, 100))
    np.testing.assert_array_equal(ev["frame_index"], 100 + np.arange(100))
    res = read_results(path)
    assert res.n_frames == 100
    np.testing.assert_array_equal(res.neuron_ids, [1, 3, 9])
    assert (res.A != A).nnz == 0
    np.testing.assert_array_equal(res.b0, b0)
    t = np.arange(100)
    np.testing.assert_array_equal(res.C[0], 1000 + t)
    np.testing.assert_array_equal(res.S[1], 3000 + t + 0.5)
    np.testing.assert_array_equal(res.C_raw[1], 3000 + t + 0.25)
    np.testing.assert_array_equal(res.C[2, :40], 0)  # zeros before birth
    np.testing.assert_array_equal(res.C[2, 40:], 9000 + t[40:])
    np.testing.assert_array_equal(res.birth_frame, [0, 0, 40])
    removed = list(res.trace_neuron_ids).index(2)
    np.testing.assert_array_equal(res.C_all[removed, :70], 2000 + t[:70])
    np.testing.assert_array_equal(res.C_all[removed, 70:], 0)
    np.testing.assert_array_equal(res.frames["frame_index"], 100 + t)
    np.testing.assert_array_equal(res.frames["seq"], 7 + t)
    np.testing.assert_array_equal(res.frames["daq_frame"], np.where(t % 2, -1, 50 + t))
    np.testing.assert_allclose(res.frames["latency_ms"], 1 + t / 10, rtol=1e-6)
    np.testing.assert_array_equal(res.dropped, [[5, 8]])
    assert sorted(res.rejected) == [(42, "wrong shape (5, 5)"), (155, "skipped: NaN pixels")]
    assert res.params == params.to_dict()
    assert res.attrs["params_sha256"] == params.sha256()
    assert res.input == {"source": "test"}
    assert res.attrs["format_version"] == 1


def test_bookkeeping_that_does_not_fit_int64_is_refused_before_buffering(tmp_path):
    with ResultsWriter(tmp_path / "r.h5", DIMS, CNMFEParams(), 20.0, {}) as w:
        w.append_frame(_result(0, [1]), _meta(0))
        with pytest.raises(ValueError, match="frame_index = 9223372036854775808 does not fit"):
            w.append_frame(_result(1, [1]), dict(_meta(1), frame_index=2**63))
        w.append_frame(_result(1, [1]), _meta(1))
        assert w.ok and w.n_frames == 2
    np.testing.assert_array_equal(read_results(tmp_path / "r.h5").frames["frame_index"], [100, 101])


def test_footprint_shape_is_validated(tmp_path):
    with ResultsWriter(tmp_path / "r.h5", DIMS, CNMFEParams(), 20.0, {}) as w:
        with pytest.raises(ValueError, match="expected"):
            w.set_footprints(scipy.sparse.csc_array((5, 2), dtype=np.float32), [1, 2], 0)


def test_unwritable_path_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        ResultsWriter(tmp_path / "missing" / "r.h5", DIMS, CNMFEParams(), 20.0, {})
    with pytest.raises(StoreError, match="cannot create"):
        ResultsWriter(tmp_path, DIMS, CNMFEParams(), 20.0, {})  # a folder, not a file
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write to read-only folders (root)")
        with pytest.raises(StoreError, match="cannot create"):
            ResultsWriter(ro / "r.h5", DIMS, CNMFEParams(), 20.0, {})
    finally:
        ro.chmod(0o700)


def test_read_results_rejects_other_files(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    from online_cnmfe.errors import StateFileError

    with pytest.raises(StateFileError, match="not an online-cnmfe results file"):
        read_results(other)
    with pytest.raises(StateFileError, match="does not exist"):
        read_results(tmp_path / "nope.h5")


_WRITER_SCRIPT = textwrap.dedent(
    """
    import os, resource, signal, sys
    import numpy as np
    from online_cnmfe.model.frame_result import FrameResult
    from online_cnmfe.params import CNMFEParams
    from online_cnmfe.results.writer import ResultsWriter, StoreError

    path, mode = sys.argv[1], sys.argv[2]
    if mode == "full":  # simulate a full disk: writes past 1 MB fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
    params = CNMFEParams.from_dict({"engine": {"flush_period_s": 1000.0}})
    w = ResultsWriter(path, (12, 10), params, 20.0, {"source": "sub"}, block_frames=32)
    ids = np.arange(1, 41, dtype=np.int64)
    t = 0
    try:
        while True:
            x = (ids * 1000 + t).astype(np.float32)
            w.append_frame(FrameResult(t, ids, x, x, x),
                           {"frame_index": t, "seq": t, "daq_frame": t,
                            "t_acq_ms": t * 50.0, "latency_ms": 1.0})
            t += 1
            if t % 50 == 0:
                w.flush()
                print("flushed", t, flush=True)
    except StoreError as exc:
        print("STOREERROR", exc, w.hdf5_failed, flush=True)
        os._exit(3)  # HDF5 may crash at interpreter exit after a failed write
    """
)


def _start_writer(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER_SCRIPT)
    path = tmp_path / "killed.h5"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    return proc, path


def test_sigkill_leaves_a_readable_file_with_every_flushed_frame(tmp_path):
    proc, path = _start_writer(tmp_path, "run")
    try:
        flushed = 0
        while flushed < 400:  # let it run through several blocks and flushes
            line = proc.stdout.readline()
            assert line, "writer exited early"
            flushed = int(line.split()[1])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    res = read_results(path)
    assert res.n_frames >= flushed
    t = np.arange(res.n_frames)
    np.testing.assert_array_equal(res.frames["frame_index"], t)
    np.testing.assert_array_equal(res.C_all[0], 1000 + t)
    np.testing.assert_array_equal(res.C_all[39], 40000 + t)
    assert not res.attrs["complete"]

    recovered = recover_results(path, tmp_path / "clean.h5")
    with h5py.File(recovered, "r") as f:  # an ordinary file again
        assert f["frames/frame_index"].shape[0] == res.n_frames

    # Resume appends to the killed file in place.
    n0 = res.n_frames
    with ResultsWriter(path, (12, 10), CNMFEParams(), 20.0, {}, resume=True) as w:
        ids = np.array([1, 41], np.int64)
        x = np.array([1.0, 2.0], np.float32)
        w.append_frame(FrameResult(n0, ids, x, x, x), _meta(n0))
    again = read_results(path)
    assert again.n_frames == n0 + 1
    np.testing.assert_array_equal(again.C_all[0, :n0], 1000 + t)
    assert again.C_all[0, n0] == 1.0 and again.C_all[-1, n0] == 2.0
    assert again.C_all[1, n0] == 0.0  # neuron 2 absent from the resumed frame
    assert (tmp_path / "killed.h5.crashed").exists()


def test_disk_full_raises_store_error_and_keeps_flushed_frames(tmp_path):
    proc, path = _start_writer(tmp_path, "full")
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, out
    assert "STOREERROR" in out and "--resume" in out and "True" in out
    flushed = [int(line.split()[1]) for line in out.splitlines() if line.startswith("flushed")]
    assert flushed, out
    res = read_results(path)
    assert res.n_frames >= flushed[-1]


def test_low_disk_space_stops_writing_cleanly(tmp_path):
    path = tmp_path / "r.h5"
    w = ResultsWriter(path, DIMS, CNMFEParams(), 20.0, {}, block_frames=4)
    for t in range(4):  # the first block is written normally
        w.append_frame(_result(t, [1, 2]), _meta(t))
    w.flush()
    w._min_free_bytes = 2**62  # pretend the disk is now full
    with pytest.raises(StoreError, match="free"):
        for t in range(4, 12):
            w.append_frame(_result(t, [1, 2]), _meta(t))
    assert not w.ok and not w.hdf5_failed
    with pytest.raises(StoreError, match="no longer written"):
        w.append_frame(_result(12, [1, 2]), _meta(12))
    w.close()
    with h5py.File(path, "r") as f:  # closed cleanly, no SWMR needed
        assert f["frames/frame_index"].shape[0] == 4


def test_flagged_frames_are_recorded_with_their_reason(tmp_path):
    """frames/flagged lists the frames that got traces but did not update the model."""
    path = tmp_path / "flags.h5"
    flags = {3: "motion: shift 23.1 px > max 20", 11: "motion: registration quality 0.12 < 0.35"}
    with ResultsWriter(path, DIMS, CNMFEParams(), 20.0, {}, block_frames=4) as w:
        for t in range(16):
            r = _result(t, [1, 2])
            if t in flags:
                r = dataclasses.replace(r, flag=flags[t])
            w.append_frame(r, _meta(t))
    res = read_results(path)
    assert res.flagged == [(100 + t, reason) for t, reason in sorted(flags.items())]
    assert res.n_frames == 16 and res.rejected == []  # flagged frames are not rejected
    np.testing.assert_array_equal(res.C_all[:, 3], _result(3, [1, 2]).C)  # and keep their traces


def test_resuming_a_file_without_frames_flagged_adds_it(tmp_path):
    path = tmp_path / "old.h5"
    A = scipy.sparse.csc_array(np.ones((DIMS[0] * DIMS[1], 1), np.float32))
    with ResultsWriter(path, DIMS, CNMFEParams(), 20.0, {}) as w:
        w.append_frame(_result(0, [1]), _meta(0))
        w.set_footprints(A, np.array([1]), version=0)
    with h5py.File(path, "r+") as f:  # a file written before frames/flagged existed
        del f["frames/flagged"]
    with ResultsWriter(path, DIMS, CNMFEParams(), 20.0, {}, resume=True) as w:
        w.append_frame(dataclasses.replace(_result(1, [1]), flag="x"), _meta(1))
        w.set_footprints(A, np.array([1]), version=0)
    assert read_results(path).flagged == [(101, "x")]
