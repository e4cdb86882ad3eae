"""process_recording (core of `process` and `batch`): summary, closed files, up-to-date check."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from online_cnmfe.errors import InputFileError
from online_cnmfe.offline.process import (
    ProcessJob,
    frame_rate_fields,
    open_recording,
    process_recording,
)
from online_cnmfe.offline.up_to_date import why_redo
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results import state_file as state_io
from online_cnmfe.results.reader import read_results
from tests.online_cnmfe.model_fixtures import make_movie, truth_init

N_INIT = 60


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline")
    movie = make_movie(n_frames=140, seed=3)
    with h5py.File(tmp / "movie.h5", "w") as f:
        f.create_dataset("movie", data=movie.frames)
        f.attrs["frame_rate_hz"] = 15.0
    params = _params()
    state_io.save_model(
        tmp / "init.h5", params, truth_init(movie, N_INIT), fmt=state_io.INIT_FORMAT
    )
    return tmp


def _params(**dotted) -> CNMFEParams:
    base = {"data.neuron_diameter_px": 8.0, "init.init_frames": N_INIT}
    base.update({"detection.enabled": False, **dotted})
    return CNMFEParams().replace(**base)


def _job(tmp, out, params=None, **kw) -> ProcessJob:
    params = params or _params()
    return ProcessJob(
        movie=tmp / "movie.h5",
        out=out,
        params=params,
        init_result=tmp / "init.h5",
        **frame_rate_fields(params, rate_given=False),
        **kw,
    )


def _movie_closed(path) -> bool:
    """h5py refuses r+ on a file this process still holds open read-only."""
    try:
        with h5py.File(path, "r+"):
            return True
    except OSError:
        return False


def test_summary_matches_the_file_and_the_movie_is_closed(files, tmp_path):
    out = tmp_path / "r.h5"
    summary = process_recording(_job(files, out))
    assert _movie_closed(files / "movie.h5")
    res = read_results(out)
    assert summary.out == out
    assert summary.n_frames == res.n_frames == 140
    assert summary.n_components == res.neuron_ids.shape[0] > 0
    assert summary.frame_ms.shape == (140 - N_INIT,) and np.isfinite(summary.frame_ms).all()
    assert res.attrs["frame_rate_hz"] == pytest.approx(15.0)  # the file's rate, taken over
    assert res.params["data"]["frame_rate_hz"] == pytest.approx(15.0)


def test_a_recording_too_short_is_refused_and_closed(files, tmp_path):
    params = _params(**{"init.init_frames": 140})
    with pytest.raises(InputFileError, match="init.init_frames=140") as excinfo:
        process_recording(_job(files, tmp_path / "r.h5", params))
    assert excinfo.value is not None  # the traceback (and its frames) is still alive here
    assert _movie_closed(files / "movie.h5")
    assert not (tmp_path / "r.h5").exists()


def test_why_redo_says_why_and_none_when_up_to_date(files, tmp_path):
    out = tmp_path / "r.h5"
    job = _job(files, out)
    with open_recording(job, preflight=False) as rec:
        assert why_redo(out, rec, job.movie) == "no results file"
    process_recording(job)
    with open_recording(job, preflight=False) as rec:
        assert why_redo(out, rec, job.movie) is None
    changed = _job(files, out, _params(**{"deconv.sparsity_penalty": 0.5}))
    with open_recording(changed, preflight=False) as rec:
        assert why_redo(out, rec, changed.movie) == "parameters changed"
    shorter = _job(files, out, max_frames=120)
    with open_recording(shorter, preflight=False) as rec:
        assert "has 140 frames, the recording 120" in why_redo(out, rec, shorter.movie)
    with h5py.File(out, "r+") as f:
        f.attrs["software_version"] = "0.0.1"
    with open_recording(job, preflight=False) as rec:
        assert why_redo(out, rec, job.movie).startswith("written by online-cnmfe 0.0.1")
    with h5py.File(out, "r+") as f:
        f.attrs["complete"] = False
    with open_recording(job, preflight=False) as rec:
        assert why_redo(out, rec, job.movie) == "results file incomplete (interrupted run)"
    out.write_bytes(b"not hdf5")
    with open_recording(job, preflight=False) as rec:
        assert why_redo(out, rec, job.movie).startswith("results file unreadable")


def test_a_rate_given_by_the_user_wins_over_the_file(files, tmp_path):
    params = _params(**{"data.frame_rate_hz": 7.5})
    fields = frame_rate_fields(params, rate_given=True)
    assert fields == {"frame_rate_hz": 7.5, "rate_from_file": False}
    job = ProcessJob(movie=files / "movie.h5", out=tmp_path / "r.h5", params=params, **fields)
    with open_recording(job) as rec:
        assert rec.info.frame_rate_hz == pytest.approx(7.5)
        assert rec.params.data.frame_rate_hz == pytest.approx(7.5)
