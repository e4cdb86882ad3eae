"""Binding closed-loop rules to trace columns: neuron ids → columns of the current frame.

Neurons are born, merged and removed, so the column of a neuron id changes; a rule names ids
(or a region, resolved to the ids whose centroid lies in it) and is re-bound whenever the id
vector or the centroids change. :class:`NeuronIdIndex` answers "which column is id i" for a
whole vector of ids in O(n log K).
"""

from __future__ import annotations

import logging

import numpy as np

from online_cnmfe.triggers.rules import Rule
from online_cnmfe.triggers.runtime import RuleRuntime

logger = logging.getLogger(__name__)


class NeuronIdIndex:
    """The id vector of the last frame, with a sorted copy for vectorised lookups."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.version = 0  # bumped when the id vector changes
        self._sorted = np.zeros(0, np.int64)
        self._order = np.zeros(0, np.intp)

    def update(self, neuron_ids: np.ndarray) -> bool:
        """Take this frame's id vector; True when it differs from the previous one."""
        if neuron_ids is self.ids or np.array_equal(neuron_ids, self.ids):
            return False
        self.ids = np.array(neuron_ids, dtype=np.int64)
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]
        self.version += 1
        return True

    def columns(self, wanted: np.ndarray) -> np.ndarray:
        """Column of each wanted id in the current id vector, -1 where absent."""
        if len(self._sorted) == 0:
            return np.full(len(wanted), -1, np.intp)
        pos = np.searchsorted(self._sorted, wanted)
        pos = np.minimum(pos, len(self._sorted) - 1)
        found = self._sorted[pos] == wanted
        return np.where(found, self._order[pos], -1).astype(np.intp)


def region_members(
    rule: Rule, centroids: tuple[np.ndarray, np.ndarray] | None
) -> np.ndarray | None:
    """Ids whose centroid lies in the rule's region (None while no centroids are known)."""
    if centroids is None:
        return None
    ids, cents = centroids
    return ids[rule.region.contains(cents)]


def bind_rule(rt: RuleRuntime, index: NeuronIdIndex, zscore_params) -> None:
    """Point ``rt`` at the columns of its neurons; inactive (warned once) while any is absent."""
    rule = rt.rule
    rt.bound_to = index.version
    if rule.neurons is not None:
        wanted = np.asarray(rule.neurons, dtype=np.int64)
        cols = index.columns(wanted)
        missing = wanted[cols < 0]
        if len(missing):
            if not rt.warned:
                logger.warning(
                    "trigger rule %r names neuron(s) %s that do not exist (yet); the rule "
                    "stays inactive until they do", rule.name, missing.tolist(),
                )  # fmt: skip
                rt.warned = True
            rt.active = False
            return
        if rt.warned:
            logger.info("trigger rule %r is active: all its neurons exist", rule.name)
            rt.warned = False
        rt.reselect(wanted, zscore_params)
    else:
        inside = rt.region_ids if rt.region_ids is not None else np.zeros(0, np.int64)
        cols = index.columns(inside)
        keep = cols >= 0
        cols = cols[keep]
        rt.reselect(inside[keep], zscore_params)
        if len(cols) == 0 and not rt.warned:
            logger.warning(
                "trigger rule %r: no neuron centroid lies in its region (yet); inactive", rule.name
            )
            rt.warned = True
        elif len(cols):
            rt.warned = False
    rt.idx = np.ascontiguousarray(cols, dtype=np.intp)
    rt.active = len(rt.idx) > 0
