"""`online-cnmfe process` end to end on a small simulated file, scored by the evaluator."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from online_cnmfe.cli import main
from online_cnmfe.evaluation.metrics import evaluate_files
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results import state_file as state_io
from online_cnmfe.results.reader import read_results
from tests.online_cnmfe.model_fixtures import make_movie, truth_init

N_INIT = 120


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("process")
    movie = make_movie(n_frames=300, seed=8)
    with h5py.File(tmp / "movie.h5", "w") as f:
        f.create_dataset("movie", data=movie.frames)
    fp = movie.A.toarray().T.reshape(-1, *movie.frames.shape[1:])
    with h5py.File(tmp / "truth.h5", "w") as f:
        f["truth/footprints"] = fp
        f["truth/C"] = movie.C
        f["truth/pnr"] = movie.C.max(axis=1) / movie.noise
    params = CNMFEParams.from_dict({"data": {"neuron_diameter_px": 8.0}})
    state_io.save_model(
        tmp / "init.h5", params, truth_init(movie, N_INIT), fmt=state_io.INIT_FORMAT
    )
    return tmp, movie


def test_process_writes_results_the_evaluator_reads(files):
    tmp, movie = files
    out = tmp / "result.h5"
    rc = main(
        [
            "process", str(tmp / "movie.h5"), "--out", str(out), "--init-result",
            str(tmp / "init.h5"), "--init-frames", str(N_INIT), "--set",
            "data.neuron_diameter_px=8", "--set", "detection.enabled=false", "--quiet",
            "--save-model", str(tmp / "model.h5"),
        ]
    )  # fmt: skip
    assert rc == 0
    res = read_results(out)
    T = movie.frames.shape[0]
    assert res.n_frames == T
    with h5py.File(out, "r") as f:
        C = f["traces/C"][()]
        assert C.shape == (movie.C.shape[0], T)
        assert f["footprints"].attrs["shape"][1] == movie.C.shape[0]
        np.testing.assert_array_equal(f["frames/frame_index"][()], np.arange(T))
        assert np.isfinite(f["frames/latency_ms"][N_INIT:]).all()
    metrics = evaluate_files(out, tmp / "truth.h5")
    assert metrics["f1"] == pytest.approx(1.0)
    assert metrics["trace_corr_median"] > 0.9
    assert main(["evaluate", str(out), str(tmp / "truth.h5"), "--json-only"]) == 0
    assert (tmp / "model.h5").exists()


def test_process_bad_inputs_give_one_line_errors(files, capsys):
    tmp, _ = files
    assert main(["process", str(tmp / "nope.h5"), "--out", str(tmp / "r.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.h5" in err
    rc = main(
        ["process", str(tmp / "movie.h5"), "--out", str(tmp / "r.h5"), "--init-frames", "400"]
    )
    assert rc == 2 and "init.init_frames=400" in capsys.readouterr().err
    rc = main(
        ["process", str(tmp / "movie.h5"), "--out", str(tmp / "r.h5"), "--set", "data.nope=1"]
    )
    assert rc == 2 and "unknown parameter" in capsys.readouterr().err
    rc = main(["process", str(tmp / "movie.h5"), "--out", str(tmp / "r.h5"), "--max-frames", "10"])
    err = capsys.readouterr().err
    assert rc == 2 and "--max-frames 10 keeps 10 of the 300 frames" in err
    assert "a larger --max-frames" in err
    rc = main(
        ["process", str(tmp / "movie.h5"), "--out", str(tmp / "r.h5"),
         "--set", "data.frame_rate_hz=twenty"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "data.frame_rate_hz='twenty' is not a number" in err


def test_process_with_real_initialisation_on_simulator_file(tmp_path):
    from acquisition.simulator import MiniscopeSimulator
    from acquisition.simulator_params import SimulationParams

    sim = MiniscopeSimulator(
        SimulationParams(height=64, width=64, n_frames=260, n_neurons=8, seed=2, n_neuropil=4)
    )
    movie = sim.frames(0, 260)
    np.save(tmp_path / "movie.npy", movie)
    out = tmp_path / "result.h5"
    rc = main(["process", str(tmp_path / "movie.npy"), "--out", str(out), "--init-frames", "150",
               "--quiet"])  # fmt: skip
    assert rc == 0
    res = read_results(out)
    assert res.n_frames == 260
    with h5py.File(out, "r") as f:
        K = f["traces/C"].shape[0]
        assert K >= 1 and f["traces/C"].shape[1] == 260
        assert np.isfinite(f["traces/C"][()]).all()
        assert f["background/b0"].shape == (64, 64)


def test_process_miniscope_folder_records_lost_daq_frames(files, tmp_path):
    from tests.acquisition.test_sources_miniscope import write_miniscope_session

    src, movie = files
    frames = np.clip(np.rint(movie.frames), 0, 255).astype(np.uint8)
    daq = list(range(100, 100 + 200)) + list(range(303, 303 + 100))  # 3 frames lost at row 200
    dev = write_miniscope_session(tmp_path / "session", frames, frames_per_file=100, daq=daq)
    out = tmp_path / "result.h5"
    rc = main(
        ["process", str(dev), "--out", str(out), "--init-result", str(src / "init.h5"),
         "--init-frames", str(N_INIT), "--set", "data.neuron_diameter_px=8", "--set",
         "detection.enabled=false", "--quiet"]
    )  # fmt: skip
    assert rc == 0
    with h5py.File(out, "r") as f:
        # hardware frames the software never got: DAQ counter values, not frame indices
        (row,) = f["bookkeeping/lost"][()]
        assert (row["kind"], row["first"], row["last"]) == (b"daq_lost", 300, 302)
        assert f.attrs["n_daq_lost"] == 3 and f["frames/dropped"].shape == (0, 2)
        np.testing.assert_array_equal(f["frames/daq_frame"][()], daq)
    metrics = evaluate_files(out, src / "truth.h5")
    assert metrics["f1"] == pytest.approx(1.0)


def test_frame_rate_given_with_set_reaches_the_source_and_the_file(files):
    tmp, _ = files
    out = tmp / "rate.h5"
    rc = main(
        [
            "process", str(tmp / "movie.h5"), "--out", str(out), "--init-result",
            str(tmp / "init.h5"), "--init-frames", str(N_INIT), "--set",
            "data.frame_rate_hz=7.5", "--set", "detection.enabled=false", "--quiet",
            "--max-frames", str(N_INIT + 10),
        ]
    )  # fmt: skip
    assert rc == 0
    with h5py.File(out, "r") as f:
        assert f.attrs["frame_rate_hz"] == pytest.approx(7.5)
        t = f["frames/t_acq_ms"][()]
    np.testing.assert_allclose(np.diff(t), 1000 / 7.5)  # timestamps follow the given rate


def test_process_flags_corrupt_frames_of_a_raw_movie(tmp_path):
    from acquisition.simulator import MiniscopeSimulator, SimulationParams

    sim = MiniscopeSimulator(
        SimulationParams(
            height=64, width=64, n_frames=260, n_neurons=8, neuron_diameter_px=10.0, seed=3,
            line_noise_sigma=20.0, corrupt_fraction=0.06,
        )
    )  # fmt: skip
    np.save(tmp_path / "movie.npy", sim.frames(0, 260))
    out = tmp_path / "result.h5"
    rc = main(
        [
            "process", str(tmp_path / "movie.npy"), "--out", str(out), "--init-frames", "150",
            "--set", "data.neuron_diameter_px=10", "--set", "data.frame_rate_hz=20", "--quiet",
            "--set", "preprocess.sanity_max_coverage=0.01",  # any result is "implausible"
        ]
    )  # fmt: skip
    assert rc == 0
    res = read_results(out)
    assert res.attrs["sanity_warning"].startswith("Result implausible: ")
    truth = np.flatnonzero(sim.corrupt_frames(0, 260))
    assert truth.size >= 5 and (truth < 150).any() and (truth >= 150).any()
    assert [i for i, _ in res.flagged] == truth.tolist()  # initialisation and online frames
    assert all(reason.startswith("corrupt: ") for _, reason in res.flagged)
    assert res.n_frames == 260


def test_the_recordings_rate_is_used_with_a_config_file_and_a_mismatch_warns(files, caplog):
    tmp, movie = files
    with h5py.File(tmp / "rate30.h5", "w") as f:
        f.create_dataset("movie", data=movie.frames[: N_INIT + 10])
        f["movie"].attrs["frame_rate_hz"] = 30.0
    plain = tmp / "plain.toml"
    plain.write_text("[detection]\nenabled = false\n")  # sets no rate: the file's is used
    common = ["--init-result", str(tmp / "init.h5"), "--init-frames", str(N_INIT), "--quiet"]
    out = tmp / "r30.h5"
    assert main(["process", str(tmp / "rate30.h5"), "--out", str(out), "--config", str(plain),
                 *common]) == 0  # fmt: skip
    with h5py.File(out, "r") as f:
        assert f.attrs["frame_rate_hz"] == 30.0
    wrong = tmp / "wrong.toml"
    wrong.write_text("[data]\nframe_rate_hz = 20.0\n[detection]\nenabled = false\n")
    caplog.clear()
    assert main(["process", str(tmp / "rate30.h5"), "--out", str(tmp / "r20.h5"), "--config",
                 str(wrong), *common]) == 0  # fmt: skip
    assert "declares 30 Hz but data.frame_rate_hz=20 Hz is set" in caplog.text
    with h5py.File(tmp / "r20.h5", "r") as f:
        assert f.attrs["frame_rate_hz"] == 20.0


def test_a_file_without_a_rate_names_the_options_that_set_it(files, caplog):
    tmp, movie = files
    np.save(tmp / "norate.npy", movie.frames[: N_INIT + 5])
    rc = main(["process", str(tmp / "norate.npy"), "--out", str(tmp / "nr.h5"), "--init-result",
               str(tmp / "init.h5"), "--init-frames", str(N_INIT), "--quiet"])  # fmt: skip
    assert rc == 0
    assert "--set data.frame_rate_hz=HZ for `process`" in caplog.text
    assert "pass --fps" not in caplog.text


def test_process_miniscope_folder_with_missing_chunks_records_them(files, tmp_path):
    from tests.acquisition.test_sources_miniscope import write_miniscope_session

    src, movie = files
    frames = np.clip(np.rint(movie.frames), 0, 255).astype(np.uint8)
    dev = write_miniscope_session(tmp_path / "session", frames, frames_per_file=50)
    (dev / "0.avi").unlink()  # frames 0-49
    (dev / "3.avi").unlink()  # frames 150-199
    out = tmp_path / "result.h5"
    rc = main(
        ["process", str(dev), "--out", str(out), "--init-result", str(src / "init.h5"),
         "--init-frames", str(N_INIT), "--set", "detection.enabled=false", "--quiet"]
    )  # fmt: skip
    assert rc == 0
    res = read_results(out)
    np.testing.assert_array_equal(res.frames["frame_index"], np.r_[50:150, 200:300])
    assert [(int(r["first"]), int(r["last"])) for r in res.lost] == [(0, 49), (150, 199)]
    assert all(r["kind"] == b"dropped" and b"missing from the recording" in r["reason"]
               for r in res.lost)  # fmt: skip
    assert res.attrs["n_frames_dropped"] == 100


def test_the_slow_path_thread_changes_nothing_in_the_results(files):
    """`engine.slow_path_thread` (default true) overlaps each slow-path step with the next
    frame; the results file must be the one of inline execution (the batch runner relies on
    `process` being reproducible)."""
    tmp, _ = files
    traces = {}
    for threaded in ("true", "false"):
        out = tmp / f"threaded-{threaded}.h5"
        rc = main(
            [
                "process", str(tmp / "movie.h5"), "--out", str(out), "--init-frames",
                str(N_INIT), "--set", "data.neuron_diameter_px=8", "--set",
                f"engine.slow_path_thread={threaded}", "--quiet",
            ]
        )  # fmt: skip
        assert rc == 0
        res = read_results(out)
        traces[threaded] = (res.neuron_ids, res.C_all, res.S_all, res.A.toarray())
    for a, b in zip(traces["true"], traces["false"], strict=True):
        np.testing.assert_array_equal(a, b)


def test_process_leaves_wild_frames_out_of_the_fit_and_the_model(tmp_path):
    # A NaN frame and a 1e30 frame among the initialisation frames, a 1e30 pixel after: all
    # three recorded as rejected with the reason, the traces finite and sane.
    from acquisition.simulator import MiniscopeSimulator
    from acquisition.simulator_params import SimulationParams

    sim = MiniscopeSimulator(
        SimulationParams(height=64, width=64, n_frames=260, n_neurons=8, seed=2, dtype="float32")
    )
    movie = sim.frames(0, 260).astype(np.float32)
    clean_max = float(movie.max())
    movie[20, 3, 3] = np.nan
    movie[40] = 1e30
    movie[200, 10, 10] = 1e30
    np.save(tmp_path / "movie.npy", movie)
    out = tmp_path / "result.h5"
    rc = main(["process", str(tmp_path / "movie.npy"), "--out", str(out), "--init-frames", "150",
               "--quiet", "--set", "data.frame_rate_hz=20"])  # fmt: skip
    assert rc == 0
    res = read_results(out)
    reasons = dict(res.rejected)
    assert sorted(reasons) == [20, 40, 200], res.rejected
    assert "NaN" in reasons[20] and "outside" in reasons[40]
    assert "outside the accepted" in reasons[200]
    assert np.isfinite(res.C_all).all() and np.isfinite(res.b0).all()
    assert res.b0.max() < 2 * clean_max
    assert 40 not in res.frames["frame_index"][:150]


def test_process_corrects_motion_and_records_every_frames_shift(tmp_path):
    from acquisition.simulator import MiniscopeSimulator, SimulationParams

    sim = MiniscopeSimulator(
        SimulationParams(
            height=96, width=96, n_frames=240, n_neurons=15, neuron_diameter_px=10.0, seed=4,
            motion_px=4.0,
        )
    )  # fmt: skip
    np.save(tmp_path / "movie.npy", sim.frames(0, 240))
    out = tmp_path / "result.h5"
    rc = main(
        [
            "process", str(tmp_path / "movie.npy"), "--out", str(out), "--init-frames", "150",
            "--set", "data.neuron_diameter_px=10", "--set", "data.frame_rate_hz=20", "--quiet",
        ]
    )  # fmt: skip
    assert rc == 0
    res = read_results(out)
    # motion/shifts of the initialisation frames (written from the batch) and the online ones
    assert res.motion_shifts.shape == (240, 2) and np.isfinite(res.motion_shifts).all()
    assert np.isfinite(res.motion_quality).all()
    ok = np.ones(240, bool)
    ok[[i for i, _ in res.flagged]] = False  # (the simulator's first frames are still settling)
    est, truth = res.motion_shifts[ok], sim.motion(0, 240)[ok]
    for k in (0, 1):  # same sign as the truth: the content's displacement
        assert np.corrcoef(est[:, k], truth[:, k])[0, 1] > 0.9
    err = est - truth
    err -= np.median(err, axis=0)  # the template sits at the initialisation's median position
    assert np.median(np.hypot(*err.T)) < 0.5  # (a 96² toy movie: 0.17 px RMS at 256², BENCHMARKS)
