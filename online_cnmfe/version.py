"""The installed distribution's version (from its metadata), importable without the package's
public API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("online-cnmfe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
