"""Exception types of online-cnmfe.

Every domain failure derives from :class:`OnlineCNMFEError` or, for the frame sources, the wire
protocol and input files, from the acquisition package's
:class:`~acquisition.errors.AcquisitionError` (re-exported here); :data:`USER_ERRORS` holds both,
so a command-line entry point can turn any of them into a one-line message and a non-zero exit
code without a traceback.
"""

from acquisition.errors import AcquisitionError, InputFileError, ProtocolError, SourceError

__all__ = [
    "USER_ERRORS",
    "AcquisitionError",
    "ConfigError",
    "InputFileError",
    "OnlineCNMFEError",
    "ProtocolError",
    "SourceError",
    "StateFileError",
]


class OnlineCNMFEError(Exception):
    """Base class of the domain errors raised by online-cnmfe."""


class StateFileError(OnlineCNMFEError):
    """A saved model state or results file cannot be read back."""


class ConfigError(OnlineCNMFEError):
    """A configuration file or a ``--set key=value`` override is invalid."""


# What the command line reports as a one-line error (exit code 2) instead of a traceback.
USER_ERRORS = (OnlineCNMFEError, AcquisitionError)
