"""The public model class: :class:`online_cnmfe.model.OnlineCNMFE` plus file persistence.

The numerical core imports no file code (an import contract); this subclass adds ``save`` and
``load`` on top of :mod:`online_cnmfe.results.state_file`, so that ``from online_cnmfe import
OnlineCNMFE`` gives one object that fits, runs and persists.
"""

from __future__ import annotations

from pathlib import Path

from online_cnmfe.model.online import OnlineCNMFE as _CoreModel
from online_cnmfe.results import state_file


class OnlineCNMFE(_CoreModel):
    """Online CNMF-E with ``save``/``load`` (see :class:`online_cnmfe.model.OnlineCNMFE`).

    Examples
    --------
    >>> model = OnlineCNMFE()
    >>> model.is_initialized
    False
    """

    def save(self, path: str | Path) -> None:
        """Write params and the complete state to an HDF5 file."""
        state_file.save_online_model(path, self)

    @classmethod
    def load(cls, path: str | Path) -> OnlineCNMFE:
        """Read a model written by :meth:`save`; the next frames give identical results."""
        return state_file.load_online_model(path, cls)
