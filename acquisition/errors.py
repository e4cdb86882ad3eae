"""Exception types of the acquisition package (frame sources, wire protocol, simulator files).

The package stands alone: it imports nothing of ``online_cnmfe`` or ``dashboard``.
``online_cnmfe.errors`` re-exports these classes, so a caller can catch either name.
"""


class AcquisitionError(Exception):
    """Base class of the domain errors raised by the acquisition package."""


class InputFileError(AcquisitionError):
    """A file given by the user is missing, unreadable, of the wrong kind or lacks a dataset."""


class SourceError(AcquisitionError):
    """A frame source cannot deliver frames (corrupt file, missing device, bad layout)."""


class ProtocolError(AcquisitionError):
    """A message on a socket does not follow the wire protocol (docs/protocol.md)."""
