"""Closed-loop triggering: rules on neural activity fire triggers within milliseconds of a frame.

- :mod:`~online_cnmfe.triggers.rules`: rule dataclasses and the ``[triggers]`` config;
- :mod:`~online_cnmfe.triggers.evaluator`: :class:`TriggerEngine` (runs on the model thread);
- :mod:`~online_cnmfe.triggers.actions`: trigger socket, serial device, callbacks;
- :mod:`~online_cnmfe.triggers.control`: the REQ/REP control socket (run-time rule changes);
- :mod:`~online_cnmfe.triggers.client`: :class:`TriggerListener`, :class:`TriggerControl`;
- :mod:`~online_cnmfe.triggers.records`: :class:`TriggerRecord`, HDF5 storage.

See docs/closed-loop.md.
"""

from online_cnmfe.triggers.evaluator import TriggerEngine
from online_cnmfe.triggers.records import TriggerRecord, read_triggers, store_triggers
from online_cnmfe.triggers.rules import (
    Region,
    Rule,
    TriggerConfig,
    load_trigger_config,
    parse_rule,
    parse_trigger_config,
)

__all__ = [
    "Region",
    "Rule",
    "TriggerConfig",
    "TriggerEngine",
    "TriggerRecord",
    "load_trigger_config",
    "parse_rule",
    "parse_trigger_config",
    "read_triggers",
    "store_triggers",
]
