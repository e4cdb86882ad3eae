"""Exception types of online-cnmfe.

Every domain failure derives from :class:`OnlineCNMFEError`, so a command-line entry point can
turn it into a one-line message and a non-zero exit code without a traceback.
"""


class OnlineCNMFEError(Exception):
    """Base class of the domain errors raised by online-cnmfe."""


class InputFileError(OnlineCNMFEError):
    """A file given by the user is missing, unreadable, of the wrong kind or lacks a dataset."""


class SourceError(OnlineCNMFEError):
    """A frame source cannot deliver frames (corrupt file, missing device, bad layout)."""


class ProtocolError(OnlineCNMFEError):
    """A message on a socket does not follow the wire protocol (docs/protocol.md)."""


class StateFileError(OnlineCNMFEError):
    """A saved model state or results file cannot be read back."""


class ConfigError(OnlineCNMFEError):
    """A configuration file or a ``--set key=value`` override is invalid."""
