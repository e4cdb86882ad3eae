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
