"""Curation labels in the results file, the curate command, and the evaluator leaving rejected
neurons out."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from online_cnmfe.cli import main
from online_cnmfe.errors import StateFileError
from online_cnmfe.results import curation
from tests.online_cnmfe.results.session_files import write_session


@pytest.fixture
def session_file(tmp_path):
    return write_session(tmp_path / "s.h5")


def test_parse_ids_takes_commas_spaces_and_ranges():
    assert curation.parse_ids(["3,7", "12-14", " 20 "]) == [3, 7, 12, 13, 14, 20]
    for bad, match in (("x", "not an integer"), ("5-3", "backwards"), ("1-", "not an integer")):
        with pytest.raises(ValueError, match=match):
            curation.parse_ids([bad])


def test_labels_are_stored_logged_and_changed(session_file):
    assert curation.read_curation(session_file) == {}
    labels = curation.set_labels(session_file, accept=[7], reject=[9])
    assert labels == {7: 1, 9: -1} == curation.read_curation(session_file)
    labels = curation.set_labels(session_file, clear=[9], reject=[5])  # 5: a removed neuron
    assert labels == {7: 1, 5: -1} and curation.rejected(labels) == {5}
    with h5py.File(session_file, "r") as f:
        log = curation.read_log(f)
        assert [sorted(e) for e in log] == [
            ["accept", "reject", "time", "user"],
            ["clear", "reject", "time", "user"],
        ]
        assert log[1]["clear"] == [9] and f["curation/label"].dtype == np.int8


def test_bad_labels_name_the_problem(session_file):
    with pytest.raises(ValueError, match=r"no neuron\(s\) \[42\]"):
        curation.set_labels(session_file, reject=[42])
    with pytest.raises(ValueError, match="given twice"):
        curation.set_labels(session_file, accept=[7], reject=[7])
    assert curation.read_curation(session_file) == {}  # nothing written


def test_a_file_still_being_written_cannot_be_curated(tmp_path):
    """A writer in another process (the engine) holds the file: curation says to wait."""
    import subprocess
    import sys

    code = (
        "import sys; from online_cnmfe.params import CNMFEParams; "
        "from online_cnmfe.results.writer import ResultsWriter; "
        f"w = ResultsWriter({str(tmp_path / 'live.h5')!r}, (4, 4), CNMFEParams(), 20.0, {{}}); "
        "w.flush(); print('ready', flush=True); sys.stdin.read(); w.close()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StateFileError, match="after it has finished"):
            curation.set_labels(tmp_path / "live.h5", reject=[1], known_ids=[1])
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0


def test_curate_command_labels_thresholds_and_lists(session_file, capsys):
    assert main(["curate", str(session_file), "--reject", "9", "--accept", "7"]) == 0
    assert "1 rejected, 1 accepted" in capsys.readouterr().out
    assert curation.read_curation(session_file) == {7: 1, 9: -1}
    assert main(["curate", str(session_file), "--clear", "9", "--list", "--sort", "snr"]) == 0
    table = capsys.readouterr().out.split("\n", 1)[1]
    rows = {line.split()[0]: line.split()[-1] for line in table.splitlines()[1:]}
    assert rows == {"7": "accepted", "9": "unlabelled"}
    # every unlabelled neuron below the threshold is rejected; labelled ones are left alone
    with h5py.File(session_file, "r") as f:
        limit = float(f["quality"]["snr"].max()) + 1
    assert main(["curate", str(session_file), "--reject-below", f"snr={limit}"]) == 0
    assert curation.read_curation(session_file) == {7: 1, 9: -1}  # 7 stays accepted
    assert main(["curate", str(session_file), "--reject", "x"]) == 2
    assert "not an integer" in capsys.readouterr().err
    assert main(["curate", str(session_file), "--reject-below", "size=3"]) == 2
    assert main(["curate", str(session_file)]) == 2
    assert "nothing to do" in capsys.readouterr().err


def test_curate_metrics_recomputes_a_missing_table(session_file, capsys):
    with h5py.File(session_file, "a") as f:
        del f["quality"]
    assert main(["curate", str(session_file), "--metrics"]) == 0
    with h5py.File(session_file, "r") as f:
        assert f["quality"].shape == (2,)


def test_the_evaluator_leaves_rejected_neurons_out(session_file):
    from online_cnmfe.evaluation.files import read_result

    curation.set_labels(session_file, reject=[9])
    est = read_result(session_file)
    assert est["C"].shape[0] == 1 and est["A"].shape[1] == 1 and est["n_rejected"] == 1
    assert read_result(session_file, include_rejected=True)["C"].shape[0] == 2
