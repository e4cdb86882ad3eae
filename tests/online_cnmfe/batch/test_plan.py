"""Planning a batch: session names, the manifest, per-session parameters (no cluster)."""

from __future__ import annotations

import json

import pytest

from online_cnmfe.batch.plan import plan_sessions, read_manifest
from online_cnmfe.errors import ConfigError
from online_cnmfe.params import CNMFEParams


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def _params(task) -> dict:
    return json.loads(task.params_json)


def test_names_come_from_the_inputs_and_grow_with_parent_folders_until_unique(tmp_path):
    a = tmp_path / "mouse1" / "day1" / "Miniscope"
    b = tmp_path / "mouse1" / "day2" / "Miniscope"
    c = tmp_path / "mouse2" / "day1" / "Miniscope"
    for folder in (a, b, c):
        folder.mkdir(parents=True)
    movie = _touch(tmp_path / "other" / "rec.tif")
    tasks = plan_sessions([a, b, c, movie], tmp_path / "out", CNMFEParams())
    assert [t.name for t in tasks] == [
        "mouse1_day1_Miniscope",
        "day2_Miniscope",
        "mouse2_day1_Miniscope",
        "rec",
    ]
    assert tasks[3].out == str((tmp_path / "out" / "rec.h5").resolve())
    assert tasks[3].movie == str(movie.resolve())
    assert tasks[3].size_bytes == 1


def test_manifest_overrides_parameters_per_session_with_or_without_stage(tmp_path):
    m1, m2, m3 = (_touch(tmp_path / "data" / f"s{i}.h5") for i in (1, 2, 3))
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.write_text(
        "input,output,neuron_diameter_px,data.frame_rate_hz,init_frames\n"
        "s1.h5,first,9,,150\n"
        f"{m2},,,15,\n"
        "\n"
    )
    base = CNMFEParams().replace(**{"init.init_frames": 200})
    tasks = plan_sessions([m3], tmp_path / "out", base, manifest=manifest)
    assert [t.name for t in tasks] == ["s3", "first", "s2"]  # command line first, then manifest
    s3, first, s2 = (_params(t) for t in tasks)
    assert s3["init"]["init_frames"] == 200 and s3["data"]["neuron_diameter_px"] == 13.0
    assert first["data"]["neuron_diameter_px"] == 9 and first["init"]["init_frames"] == 150
    assert s2["data"]["frame_rate_hz"] == 15 and s2["init"]["init_frames"] == 200
    # the frame rate follows process's rule: given -> authoritative, else from the file
    assert (tasks[2].frame_rate_hz, tasks[2].rate_from_file) == (15, False)
    assert (tasks[0].frame_rate_hz, tasks[0].rate_from_file) == (None, True)
    assert tasks[1].job().params.sha256() == CNMFEParams.from_dict(first).sha256()


def test_manifest_errors_name_the_file_the_line_and_the_way_out(tmp_path):
    _touch(tmp_path / "s1.h5")
    manifest = tmp_path / "m.csv"
    manifest.write_text("movie,output\ns1.h5,a\n")
    with pytest.raises(ConfigError, match="'input' column"):
        read_manifest(manifest)
    manifest.write_text("input,neuron_diametre\ns1.h5,9\n")
    with pytest.raises(ConfigError, match="Did you mean 'neuron_diameter_px'"):
        read_manifest(manifest)
    manifest.write_text("input,merge_corr_threshold\ns1.h5,0.9\n")  # in two stages
    with pytest.raises(
        ConfigError, match="init.merge_corr_threshold, detection.merge_corr_threshold"
    ):
        read_manifest(manifest)
    manifest.write_text("input,neuron_diameter_px\ns1.h5,1000\n")
    with pytest.raises(ConfigError, match=r"m.csv line 2: .*neuron_diameter_px"):
        plan_sessions([], tmp_path / "out", CNMFEParams(), manifest=manifest)
    manifest.write_text("input,output\ns1.h5,../escape\n")
    with pytest.raises(ConfigError, match="not a name"):
        plan_sessions([], tmp_path / "out", CNMFEParams(), manifest=manifest)
    manifest.write_text("input\ns1.h5\ns1.h5\n")
    with pytest.raises(ConfigError, match="lists an input twice"):
        plan_sessions([], tmp_path / "out", CNMFEParams(), manifest=manifest)
    with pytest.raises(ConfigError, match="cannot read the manifest"):
        read_manifest(tmp_path / "missing.csv")


def test_inputs_given_twice_none_at_all_or_clashing_outputs_are_refused(tmp_path):
    m = _touch(tmp_path / "a" / "s.h5")
    with pytest.raises(ConfigError, match="given twice"):
        plan_sessions([m, tmp_path / "a" / "." / "s.h5"], tmp_path / "out", CNMFEParams())
    with pytest.raises(ConfigError, match="no input"):
        plan_sessions([], tmp_path / "out", CNMFEParams())
    other = _touch(tmp_path / "b" / "t.h5")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"input,output\n{m},same\n{other},same.h5\n")
    with pytest.raises(ConfigError, match="would all write same.h5"):
        plan_sessions([], tmp_path / "out", CNMFEParams(), manifest=manifest)


def test_batch_runs_the_slow_path_inline_unless_told_otherwise(tmp_path):
    from online_cnmfe.batch.plan import batch_params

    assert batch_params(None, {}).engine.slow_path_thread is False  # one thread per session
    p = batch_params(None, {"engine.slow_path_thread": True, "data.frame_rate_hz": 7}, 50)
    assert p.engine.slow_path_thread is True
    assert (p.data.frame_rate_hz, p.init.init_frames) == (7, 50)
    config = tmp_path / "c.toml"
    config.write_text("[engine]\nslow_path_thread = true\n[data]\nneuron_diameter_px = 9\n")
    p = batch_params(config, {})
    assert p.engine.slow_path_thread is True and p.data.neuron_diameter_px == 9
    config.write_text("[data]\nneuron_diameter_px = 9\n[triggers]\nrules = []\n")
    assert batch_params(config, {}).engine.slow_path_thread is False


def test_a_rate_given_in_the_config_or_set_wins_over_the_files_for_every_session(tmp_path):
    m = _touch(tmp_path / "s.h5")
    params = CNMFEParams().replace(**{"data.frame_rate_hz": 12.5})
    (task,) = plan_sessions([m], tmp_path / "out", params, rate_given=True)
    assert (task.frame_rate_hz, task.rate_from_file) == (12.5, False)
