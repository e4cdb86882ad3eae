import json

import pytest

from online_cnmfe.errors import ConfigError
from online_cnmfe.params import CNMFEParams, DataParams, parse_overrides


def test_defaults_round_trip_through_json_and_toml(tmp_path):
    p = CNMFEParams()
    assert CNMFEParams.from_dict(json.loads(p.to_json())) == p
    path = tmp_path / "cfg.toml"
    path.write_text(p.to_toml())
    assert CNMFEParams.from_file(path) == p


def test_unknown_key_names_closest_match():
    with pytest.raises(ConfigError, match="neuron_diameter_px"):
        CNMFEParams.from_dict({"data": {"neuron_diameter": 10}})
    with pytest.raises(ConfigError, match="unknown stage"):
        CNMFEParams.from_dict({"dat": {}})


def test_out_of_range_value_names_field_and_range():
    with pytest.raises(ValueError, match=r"frame_rate_hz=-1.*> 0"):
        DataParams(frame_rate_hz=-1)
    with pytest.raises(ConfigError, match="min_corr"):
        CNMFEParams.from_dict({"init": {"min_corr": 2.0}})


def test_params_are_frozen():
    p = CNMFEParams()
    with pytest.raises(AttributeError):
        p.data.frame_rate_hz = 3  # type: ignore[misc]


def test_overrides_parse_json_values():
    over = parse_overrides(["data.frame_rate_hz=10", "engine.on_restart=stop"])
    assert over == {"data.frame_rate_hz": 10, "engine.on_restart": "stop"}
    p = CNMFEParams().replace(**over)
    assert p.data.frame_rate_hz == 10 and p.engine.on_restart == "stop"
    with pytest.raises(ConfigError, match="stage.key=value"):
        parse_overrides(["novalue"])


def test_bad_config_file_gives_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\n")
    with pytest.raises(ConfigError, match="not valid"):
        CNMFEParams.from_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        CNMFEParams.from_file(tmp_path / "missing.toml")


def test_load_params_ignores_the_triggers_table_and_applies_overrides(tmp_path):
    from online_cnmfe.params import load_params

    cfg = tmp_path / "engine.toml"
    cfg.write_text("[data]\nframe_rate_hz = 10.0\n\n[triggers]\nenabled = false\n")
    p = load_params(cfg, ["data.neuron_diameter_px=9"])
    assert p.data.frame_rate_hz == 10.0 and p.data.neuron_diameter_px == 9
    assert load_params(None) == CNMFEParams()


def test_sha256_is_stable_across_processes_and_changes_with_any_value(tmp_path):
    import subprocess
    import sys

    p = CNMFEParams().replace(**{"data.neuron_diameter_px": 9})
    code = (
        "from online_cnmfe.params import CNMFEParams; "
        "print(CNMFEParams().replace(**{'data.neuron_diameter_px': 9}).sha256())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == p.sha256()  # no per-process ordering or salt in the digest
    path = tmp_path / "cfg.toml"
    path.write_text(p.to_toml())
    assert CNMFEParams.from_file(path).sha256() == p.sha256()
    assert p.replace(**{"data.neuron_diameter_px": 9.5}).sha256() != p.sha256()
    assert p.replace(**{"init.init_frames": 301}).sha256() != p.sha256()
