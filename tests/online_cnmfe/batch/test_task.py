"""run_session, what a worker runs: process, skip when up to date, redo with --force, and a
failure returned as data (no cluster: called in this process)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from online_cnmfe.batch.plan import plan_sessions
from online_cnmfe.batch.task import run_session
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results.reader import read_results

N_FRAMES, N_INIT = 120, 60


def simulated_movie(path, seed: int, n_frames: int = N_FRAMES) -> None:
    """A 64x64 simulated recording saved as .npy."""
    from acquisition.simulator import MiniscopeSimulator
    from acquisition.simulator_params import SimulationParams

    sim = MiniscopeSimulator(
        SimulationParams(
            height=64, width=64, n_frames=n_frames, n_neurons=8, seed=seed, n_neuropil=4
        )
    )
    np.save(path, sim.frames(0, n_frames))


@pytest.fixture
def numba_threads():
    """run_session pins numba to one thread in the calling thread: restore it afterwards."""
    n = numba.get_num_threads()
    yield
    numba.set_num_threads(n)


def test_process_then_skip_then_force_and_failures_come_back_as_data(tmp_path, numba_threads):
    simulated_movie(tmp_path / "a.npy", seed=1)
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    params = CNMFEParams().replace(**{"init.init_frames": N_INIT})
    a, broken = plan_sessions(
        [tmp_path / "a.npy", tmp_path / "broken.npy"], tmp_path / "out", params
    )
    (tmp_path / "out").mkdir()
    first = run_session(a)
    assert first["status"] == "ok" and first["note"] == "no results file"
    res = read_results(a.out)
    assert first["frames"] == res.n_frames == N_FRAMES
    assert first["neurons"] == res.neuron_ids.shape[0] >= 1
    assert first["cpu_s"] > 0 and first["peak_rss_mib"] > 0 and ":" in first["worker"]
    assert numba.get_num_threads() == 1
    first_id = _file_id(a.out)
    again = run_session(a)
    assert again["status"] == "skipped"
    assert (again["frames"], again["neurons"]) == (first["frames"], first["neurons"])
    assert _file_id(a.out) == first_id
    (forced,) = plan_sessions([tmp_path / "a.npy"], tmp_path / "out", params, force=True)
    redone = run_session(forced)  # replaces the file (process alone refuses without --overwrite)
    assert (redone["status"], redone["note"]) == ("ok", "--force")
    assert _file_id(a.out) != first_id
    (changed,) = plan_sessions(
        [tmp_path / "a.npy"], tmp_path / "out", params.replace(**{"init.init_frames": 50})
    )
    redone = run_session(changed)
    assert (redone["status"], redone["note"]) == ("ok", "parameters changed")
    failed = run_session(broken)
    assert failed["status"] == "error"
    assert failed["error"].startswith("SourceError: ") and "broken.npy" in failed["error"]


def _file_id(path) -> str:
    import h5py

    with h5py.File(path, "r") as f:
        return str(f.attrs["file_id"])
