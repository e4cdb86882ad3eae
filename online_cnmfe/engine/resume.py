"""``--resume``: continue a results file with a model whose neuron ids can never collide.

The results file keys its trace rows by neuron id, so a resumed model must never issue an id
the file already holds for another cell, nor one a subscriber already saw: :func:`plan_resume`
reads the file's largest id, the id reservation beside it (:mod:`.id_reservation`: ids
published after the file's last flush lie below it) and the file's ``file_id``, then:

- with a checkpoint written for this file (its ``results_file_id`` matches): the checkpoint's
  model continues, and ids issued from now on start past both (neurons born
  after the checkpoint keep their rows; the resumed model gives any cell it finds again a new
  id);
- with no checkpoint (a crash before the first one): the model re-initialises on the next
  frames, its ids shifted past both (a warning says identities do not carry
  over);
- with a checkpoint of another file, of other dimensions, or damaged: a one-line
  :class:`~online_cnmfe.errors.StateFileError` saying how to go on; nothing has started.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from online_cnmfe.engine.id_reservation import read_reservation
from online_cnmfe.errors import StateFileError
from online_cnmfe.results import state_file
from online_cnmfe.results.reader import read_identity

logger = logging.getLogger(__name__)

CHECKPOINT_FILE_ID = "results_file_id"  # checkpoint attribute: the results file it belongs to


def checkpoint_path(out: Path) -> Path:
    """The checkpoint of a results file: ``<stem>.state.h5`` beside it."""
    return out.with_name(out.stem + ".state.h5")


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """What the engine starts with (see :func:`plan_resume`).

    Attributes
    ----------
    model : OnlineCNMFE or None
        The checkpoint's model, its ids reserved past the file's; None: initialise afresh.
    first_free_id : int
        Ids of a freshly initialised model are shifted to start here (0: a new file).
    """

    model: Any
    first_free_id: int


def plan_resume(out: Path) -> ResumePlan:
    """Decide how ``--resume`` continues ``out`` (see the module docstring).

    Raises
    ------
    StateFileError
        If the results file or its checkpoint is damaged, or the checkpoint belongs to
        another file or frame size.
    """
    ckpt = checkpoint_path(out)
    if not out.exists():
        if ckpt.exists():
            raise StateFileError(
                f"{ckpt} exists but its results file {out} does not; pass the --out it was "
                "written for, or delete the checkpoint to start a new session"
            )
        logger.info("--resume: %s does not exist yet; starting a new session", out)
        return ResumePlan(None, 0)
    identity = read_identity(out)
    first_free = max(identity["max_neuron_id"] + 1, read_reservation(out))
    if not ckpt.exists():
        logger.warning(
            "--resume: no checkpoint %s (the engine stopped before the first one): the model "
            "re-initialises on the next frames; its neuron ids start at %d, past every id in "
            "%s, so earlier cells keep their rows but their identities do not carry over",
            ckpt, first_free, out,
        )  # fmt: skip
        return ResumePlan(None, first_free)
    model = state_file.load_online_model(ckpt)
    belongs_to = state_file.read_attrs(ckpt).get(CHECKPOINT_FILE_ID)
    if belongs_to is not None and identity["file_id"] is not None:
        if belongs_to != identity["file_id"]:
            raise StateFileError(
                f"the checkpoint {ckpt} was written for another results file than {out} "
                f"(file ids {belongs_to[:8]}… and {identity['file_id'][:8]}…); pass the --out "
                "it belongs to, or delete it to re-initialise the model"
            )
    if tuple(model.dims) != identity["dims"]:
        raise StateFileError(
            f"the checkpoint {ckpt} has frames of {tuple(model.dims)}, the results file {out} "
            f"{identity['dims']}; delete the checkpoint to re-initialise the model"
        )
    model.reserve_neuron_ids(first_free)
    logger.info(
        "resuming from checkpoint %s (frame %d); new neuron ids start at %d",
        ckpt, model.frame_index, model.state.next_id,
    )  # fmt: skip
    return ResumePlan(model, first_free)
