import subprocess
import sys


def test_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "online_cnmfe", "--help"], capture_output=True, text=True, check=True
    )
    assert "COMMAND" in out.stdout


def test_no_command_prints_help_and_fails():
    out = subprocess.run([sys.executable, "-m", "online_cnmfe"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stdout


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "online_cnmfe", *args], capture_output=True, text=True, cwd=cwd
    )


def test_an_unknown_option_prints_the_usage_of_the_subcommand():
    out = _cli("process", "movie.tif", "--out", "x.h5", "--bogus")
    assert out.returncode == 2
    assert "usage: online-cnmfe process" in out.stderr and "--bogus" in out.stderr
    out = _cli("acquire", "replay", "movie.tif", "--bogus")
    assert "usage: online-cnmfe acquire replay" in out.stderr


def test_a_bare_host_port_endpoint_suggests_tcp():
    out = _cli("acquire", "simulate", "--endpoint", "127.0.0.1:5555", "--frames", "1")
    assert out.returncode == 2 and "did you mean tcp://127.0.0.1:5555?" in out.stderr
    out = _cli("run", "--frames", "5555")
    assert out.returncode == 2 and "did you mean tcp://127.0.0.1:5555?" in out.stderr
    assert "Traceback" not in out.stderr


def test_params_dump_writes_a_config_that_process_reads(tmp_path):
    out = _cli("params", "--dump", str(tmp_path / "my_params.toml"))
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "my_params.toml").read_text()
    assert "[data]\n" in text and "frame_rate_hz = 20.0" in text and "#init_frames = 300" in text
    assert _cli("params", "--dump", str(tmp_path / "my_params.toml")).returncode == 2  # exists
    out = _cli(
        "params", "--check", str(tmp_path / "my_params.toml"), "--set",
        "detection.false_seeds_per_fov=6",
    )  # fmt: skip
    assert out.returncode == 0 and "detection.false_seeds_per_fov = 6.0" in out.stdout
    out = _cli("params", "--check", str(tmp_path / "my_params.toml"), "--set", "dat.x=1")
    assert out.returncode == 2 and "unknown parameter 'dat.x'" in out.stderr
