"""The lazy review reader (results.session) against the eager reader and the file's layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from online_cnmfe.errors import StateFileError
from online_cnmfe.results.reader import read_results
from online_cnmfe.results.session import ResultsSession
from tests.online_cnmfe.results.session_files import (
    BORN,
    DROP,
    F0_7,
    N_COLUMNS,
    REMOVED,
    SKIPPED_FRAME,
    frame_index_of,
    trace,
    write_session,
)


@pytest.fixture
def session_file(tmp_path):
    return write_session(tmp_path / "s.h5")


def test_small_tables_and_frame_index_to_column(session_file):
    with ResultsSession(session_file) as s:
        assert s.n_frames == N_COLUMNS and s.dims == (16, 32)
        np.testing.assert_array_equal(s.frame_index, [frame_index_of(c) for c in range(N_COLUMNS)])
        assert s.neuron_ids.tolist() == [7, 9] and set(s.trace_ids.tolist()) == {5, 7, 9}
        assert s.column_of(19) == 19 and s.column_of(25) == 20
        assert s.column_of(22) == 20  # a dropped frame: the next frame kept
        assert s.column_of(10**6) == N_COLUMNS - 1
        assert s.birth_frame_index(9) == frame_index_of(BORN[1])
        assert s.params["data"]["pixel_size_um"] == 2.0
        assert s.image("mean")[0, 0] == 3.0 and s.image("corr_pnr") is None
        assert s.image("background")[3, 3] == 100.0
        assert s.image_info("max") == {"n_frames": 0, "source": "test"}


def test_events_of_every_kind_in_frame_order(session_file):
    with ResultsSession(session_file) as s:
        kinds = [(e.frame_index, e.kind, e.neuron_ids) for e in s.events]
    assert kinds == [
        (DROP[0], "drop", ()),
        (frame_index_of(BORN[1]), "born", (9,)),
        (SKIPPED_FRAME, "reject", ()),
        (frame_index_of(REMOVED[1]), "removed", (5,)),
    ]
    with ResultsSession(session_file) as s:
        assert [e.kind for e in s.events_until(frame_index_of(BORN[1]))] == ["drop", "born"]
        assert s.events_until(DROP[0] - 1) == []


def test_trace_windows_match_the_eager_reader_with_nan_where_nothing_was_measured(session_file):
    res = read_results(session_file)
    row = {int(i): k for k, i in enumerate(res.trace_neuron_ids.tolist())}
    with ResultsSession(session_file) as s:
        win = s.traces([9, 7, 5, 123], 10, 50)
    for name, full in (("C", res.C_all), ("S", res.S_all), ("C_raw", res.C_raw_all)):
        assert win[name].shape == (4, 40)
        np.testing.assert_array_equal(win[name][1, :25], full[row[7], 10:35])
        assert np.isnan(win[name][3]).all()  # an id the file does not have
    c9 = win["C"][0]
    assert np.isnan(c9[: BORN[1] - 10]).all()  # not born yet
    assert c9[BORN[1] - 10] == trace(9, BORN[1])[0]
    skipped_col = int(np.flatnonzero(res.frames["frame_index"] == SKIPPED_FRAME)[0])
    assert np.isnan(win["C"][:3, skipped_col - 10]).all()  # the model skipped that frame
    np.testing.assert_array_equal(win["C"][2, :10], [trace(5, c)[0] for c in range(10, 20)])


def test_f0_and_labels_and_a_missing_file(session_file, tmp_path):
    with ResultsSession(session_file) as s:
        f0 = s.f0([7, 9, 77])
        # f0 = a.b0 / a.a over b0 = 100: neuron 9 is one pixel of weight 1 -> 100
        np.testing.assert_allclose(f0[:2], [F0_7, 100.0], rtol=1e-6)
        assert np.isnan(f0[2])
        assert s.labels == {}
        s.set_labels(reject=[9], accept=[5])
        assert s.labels == {9: -1, 5: 1}
        assert s.traces([7], 0, 3)["C"].shape == (1, 3)  # the file is open again
    with pytest.raises(StateFileError, match="does not exist"):
        ResultsSession(tmp_path / "nope.h5")
    (tmp_path / "x.h5").write_bytes(b"")
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f.attrs["format"] = "something else"
    with pytest.raises(StateFileError, match="not an online-cnmfe results file"):
        ResultsSession(tmp_path / "y.h5")


def test_a_file_without_events_table_lists_births_from_birth_columns(session_file):
    with h5py.File(session_file, "a") as f:
        del f["events"]
    with ResultsSession(session_file) as s:
        born = [(e.frame_index, e.neuron_ids) for e in s.events if e.kind == "born"]
    assert born == [(frame_index_of(BORN[1]), (9,))]
