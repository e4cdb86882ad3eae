"""Closed-loop firings in the results file: the ``triggers/`` group (:class:`TriggerRecord` rows).

The session's results file holds every firing in the group ``triggers/``, created with the file
by :func:`create_trigger_datasets` (the results file runs in HDF5 SWMR mode, where no dataset can
be created later and variable-length strings are not allowed) and grown by
:func:`store_triggers` at each flush:

- ``triggers/fired`` (n,) compound, one row per firing: ``rule`` (S64), ``frame_index``,
  ``seq`` (-1 unknown), ``t_acq_ms``, ``value`` (max crossing value / active count / weighted
  sum), ``age_ms`` (frame age at firing, from arrival at the engine; NaN unknown),
  ``t_recv_ns``, ``t_fire_ns`` (engine monotonic clock), ``count``, and ``ids_start``,
  ``ids_stop``: the firing's neuron ids are ``triggers/neuron_ids[ids_start:ids_stop]``;
- ``triggers/neuron_ids`` (m,) int64, concatenated neuron ids of all firings;
- ``triggers/rule_log`` (r,) compound ``frame_index`` (last frame seen), ``command``
  (``config``/``add``/``remove``/``enable``/``disable``), ``json_start``, ``json_stop``: the
  rule (JSON, UTF-8) is ``triggers/rule_json[json_start:json_stop]`` (uint8), so the rules in
  force at any frame can be reconstructed.

:func:`read_triggers` reads it back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # records are duck-typed here: readers need no trigger code
    from online_cnmfe.triggers.records import TriggerRecord

FIRED_DTYPE = np.dtype(
    [
        ("rule", "S64"),
        ("frame_index", "<i8"),
        ("seq", "<i8"),
        ("t_acq_ms", "<f8"),
        ("value", "<f8"),
        ("age_ms", "<f8"),
        ("t_recv_ns", "<i8"),
        ("t_fire_ns", "<i8"),
        ("count", "<i8"),
        ("ids_start", "<i8"),
        ("ids_stop", "<i8"),
    ]
)
RULE_LOG_DTYPE = np.dtype(
    [("frame_index", "<i8"), ("command", "S16"), ("json_start", "<i8"), ("json_stop", "<i8")]
)


def create_trigger_datasets(parent: Any) -> Any:
    """Create the empty ``triggers`` group in an h5py file/group (before SWMR mode is on).

    Returns the group; does nothing but return it when it already exists.
    """
    if "triggers" in parent:
        return parent["triggers"]
    g = parent.create_group("triggers")
    g.create_dataset("fired", (0,), FIRED_DTYPE, maxshape=(None,), chunks=(256,))
    g.create_dataset("neuron_ids", (0,), np.int64, maxshape=(None,), chunks=(4096,))
    g.create_dataset("rule_log", (0,), RULE_LOG_DTYPE, maxshape=(None,), chunks=(64,))
    g.create_dataset("rule_json", (0,), np.uint8, maxshape=(None,), chunks=(16384,))
    return g


def _append(ds: Any, values: np.ndarray) -> int:
    n = ds.shape[0]
    if len(values):
        ds.resize((n + len(values),))
        ds[n:] = values
    return n


def store_triggers(group: Any, records: list[TriggerRecord] | tuple[TriggerRecord, ...]) -> int:
    """Append firings to a group made by :func:`create_trigger_datasets`.

    Parameters
    ----------
    group : h5py.Group
        ``results["triggers"]``; the caller owns the file and flushes it. Works in SWMR mode.
    records : sequence of TriggerRecord

    Returns
    -------
    int
        Total number of firings stored in the group after the append.
    """
    fired, ids_ds = group["fired"], group["neuron_ids"]
    if not records:
        return int(fired.shape[0])
    rows = np.zeros(len(records), FIRED_DTYPE)
    ids = np.array([i for r in records for i in r.neuron_ids], np.int64)
    start = ids_ds.shape[0]
    stops = start + np.cumsum([len(r.neuron_ids) for r in records])
    for i, r in enumerate(records):
        rows[i] = (
            r.rule.encode("ascii", "replace")[:64], r.frame_index, r.seq, r.t_acq_ms, r.value,
            r.age_ms, r.t_recv_ns, r.t_fire_ns, r.count, stops[i] - len(r.neuron_ids), stops[i],
        )  # fmt: skip
    _append(ids_ds, ids)
    _append(fired, rows)
    return int(fired.shape[0])


def store_rule_log(group: Any, entries: list[tuple[int, str, str]]) -> None:
    """Append ``(frame_index, command, rule_json)`` entries to ``rule_log`` / ``rule_json``."""
    if not entries:
        return
    blob = [json_text.encode("utf-8") for _, _, json_text in entries]
    start = group["rule_json"].shape[0]
    stops = start + np.cumsum([len(b) for b in blob])
    rows = np.zeros(len(entries), RULE_LOG_DTYPE)
    for i, (frame, command, _) in enumerate(entries):
        rows[i] = (frame, command.encode("ascii")[:16], stops[i] - len(blob[i]), stops[i])
    _append(group["rule_json"], np.frombuffer(b"".join(blob), np.uint8))
    _append(group["rule_log"], rows)


def read_triggers(group: Any) -> dict[str, Any]:
    """Read back a ``triggers`` group.

    Returns
    -------
    dict
        ``fired`` (structured array, :data:`FIRED_DTYPE`), ``rule`` (list of str),
        ``neuron_ids`` (list of lists of int, one per firing) and ``rule_log`` (list of
        ``(frame_index, command, rule dict)``).
    """
    fired = group["fired"][()]
    flat = group["neuron_ids"][()]
    blob = group["rule_json"][()].tobytes()
    log = [
        (
            int(r["frame_index"]),
            r["command"].decode(),
            json.loads(blob[r["json_start"] : r["json_stop"]]),
        )
        for r in group["rule_log"][()]
    ]
    return {
        "fired": fired,
        "rule": [r.decode() for r in fired["rule"]],
        "neuron_ids": [flat[a:b].tolist() for a, b in zip(fired["ids_start"], fired["ids_stop"])],
        "rule_log": log,
    }
