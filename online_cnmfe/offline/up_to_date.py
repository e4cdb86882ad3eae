"""Whether an existing results file already holds a job's results (so a rerun may skip it)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from online_cnmfe.errors import StateFileError
from online_cnmfe.offline.process import Recording
from online_cnmfe.results.layout import FORMAT, open_for_reading
from online_cnmfe.version import __version__

logger = logging.getLogger(__name__)


def why_redo(out: Path, recording: Recording, movie: Path) -> str | None:
    """Why ``out`` must be (re)computed for this recording, or None if it is up to date.

    A results file is up to date when it was closed cleanly (``complete``), by this version of
    online-cnmfe, from the same input path, over the same number of frames and with the same
    parameters (``params_sha256``, see :meth:`CNMFEParams.sha256`).

    Parameters
    ----------
    out : Path
        The results file the job would write.
    recording : Recording
        The opened recording (its ``params`` and ``n_frames`` are what the job would use).
    movie : Path
        The job's input.

    Returns
    -------
    str or None
        A short reason (``"no results file"``, ``"parameters changed"``, …), None to skip.
    """
    out = Path(out)
    if not out.exists():
        return "no results file"
    try:
        with open_for_reading(out) as f:
            attrs = dict(f.attrs)
    except (StateFileError, OSError) as exc:
        return f"results file unreadable ({exc})"
    if attrs.get("format") != FORMAT:
        return "not an online-cnmfe results file"
    if not bool(attrs.get("complete", False)):
        return "results file incomplete (interrupted run)"
    if str(attrs.get("software_version")) != __version__:
        return f"written by online-cnmfe {attrs.get('software_version')}, this is {__version__}"
    if str(attrs.get("params_sha256", "")) != recording.params.sha256():
        return "parameters changed"
    try:
        source = json.loads(str(attrs.get("input", "{}"))).get("path")
    except ValueError:
        source = None
    if source != str(Path(movie).resolve()):
        return f"made from another input ({source})"
    if int(attrs.get("n_frames", -1)) != recording.n_frames:
        return f"has {attrs.get('n_frames')} frames, the recording {recording.n_frames}"
    return None
