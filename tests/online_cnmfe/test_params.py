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
    with pytest.raises(ConfigError, match="min_space_corr"):
        CNMFEParams.from_dict({"detection": {"min_space_corr": 2.0}})


@pytest.mark.parametrize("key", ["init.min_pnr", "detection.min_corr", "init.auto_thresholds"])
def test_removed_threshold_keys_say_what_replaced_them(key):
    stage, name = key.split(".")
    with pytest.raises(ConfigError, match=f"'{key}' was removed.*false_seeds_per_fov"):
        CNMFEParams.from_dict({stage: {name: 1.0}})
    with pytest.raises(ConfigError, match="false_seeds_per_fov"):
        CNMFEParams().replace(**{key: 1.0})


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


def test_preprocess_stage_defaults_and_validation():
    from online_cnmfe.params import PreprocessParams

    p = CNMFEParams()
    assert p.preprocess.enabled and p.preprocess.remove_row_offsets
    assert p.preprocess.flag_corrupt_frames and p.preprocess.fov_mask
    assert not p.preprocess.remove_column_offsets and not p.preprocess.estimate_diameter
    q = CNMFEParams.from_dict({"preprocess": {"fov_margin_px": 4.0, "broken_row_ratio": 3.0}})
    assert q.preprocess.fov_margin_px == 4.0
    for field, value in (("broken_row_ratio", 1.0), ("offset_samples", 4),
                         ("max_brightness_jump", 0.0), ("fov_threshold", 0.95),
                         ("fov_margin_px", -1.0), ("sanity_max_silent_fraction", 1.5)):  # fmt: skip
        with pytest.raises(ValueError, match=field):
            PreprocessParams(**{field: value})
    with pytest.raises(ConfigError, match="preprocess.remove_row_offsets"):
        CNMFEParams.from_dict({"preprocess": {"remove_row_offset": False}})


def test_a_value_of_the_wrong_type_is_named_with_an_example():
    with pytest.raises(ConfigError, match=r"data.frame_rate_hz='twenty' is not a number.*=20.0"):
        CNMFEParams().replace(**parse_overrides(["data.frame_rate_hz=twenty"]))
    with pytest.raises(ConfigError, match=r"detection.enabled='yes' is not true or false"):
        CNMFEParams().replace(**{"detection.enabled": "yes"})
    with pytest.raises(ConfigError, match=r"init.init_frames=2.5 is not an integer"):
        CNMFEParams.from_dict({"init": {"init_frames": 2.5}})
    p = CNMFEParams.from_dict({"data": {"frame_rate_hz": 10}})  # ints widen to floats
    assert isinstance(p.data.frame_rate_hz, float) and p.data.frame_rate_hz == 10.0
    assert CNMFEParams().replace(**{"init.gaussian_sigma_px": None}).init.gaussian_sigma_px is None


def test_a_typo_in_the_stage_suggests_the_key_not_the_whole_list():
    with pytest.raises(ConfigError) as err:
        CNMFEParams().replace(**{"dat.frame_rate_hz": 20})
    msg = str(err.value)
    assert "did you mean 'data.frame_rate_hz'" in msg and "params --dump" in msg
    assert "engine.queue_frames" not in msg and len(msg) < 200
    with pytest.raises(ConfigError) as err:
        CNMFEParams().replace(**{"data.frame_rate": 20})
    assert "'data.frame_rate_hz'" in str(err.value) and "init_frames" not in str(err.value)
    with pytest.raises(ConfigError, match="stages: data, init"):
        CNMFEParams().replace(**{"zzz.qqq": 1})


def test_pixel_size_is_optional_and_positive():
    assert CNMFEParams().data.pixel_size_um is None
    assert DataParams(pixel_size_um=1.5).pixel_size_um == 1.5
    with pytest.raises(ValueError, match="pixel_size_um=0"):
        DataParams(pixel_size_um=0)


def test_dumped_default_config_loads_back_and_documents_every_key():
    import dataclasses
    import tomllib

    from online_cnmfe.params.dump import default_config_text, field_comments
    from online_cnmfe.params.tree import _STAGES

    text = default_config_text()
    assert CNMFEParams.from_dict(tomllib.loads(text)) == CNMFEParams()
    for stage, cls in _STAGES.items():
        assert f"[{stage}]" in text
        for f in dataclasses.fields(cls):
            assert f"{f.name} = " in text, f"{stage}.{f.name} missing from the dump"
    # the comment written beside a key in the source describes it; continuation lines too
    from online_cnmfe.params import BackgroundParams

    comments = field_comments(BackgroundParams)
    assert comments["ring_radius_factor"].endswith("BENCHMARKS.md)")
    assert comments["downsample"] == "ssub_B"
    # a non-default value stays active even outside [data]
    changed = CNMFEParams().replace(**{"online.nan_policy": "zero", "data.pixel_size_um": 2.0})
    assert CNMFEParams.from_dict(tomllib.loads(default_config_text(changed))) == changed


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
