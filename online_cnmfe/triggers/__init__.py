"""Closed-loop triggering: rules on neural activity fire triggers within milliseconds of a frame.

- :mod:`~online_cnmfe.triggers.rules`, :mod:`~online_cnmfe.triggers.regions`: rule dataclasses;
- :mod:`~online_cnmfe.triggers.config`: the ``[triggers]`` table of the engine config;
- :mod:`~online_cnmfe.triggers.evaluator`: :class:`TriggerEngine` (runs on the model thread);
- :mod:`~online_cnmfe.triggers.actions`: trigger socket, serial device, callbacks;
- :mod:`~online_cnmfe.triggers.control`: the REQ/REP control socket (run-time rule changes);
- :mod:`~online_cnmfe.triggers.client`: :class:`TriggerListener`, :class:`TriggerControl`;
- :mod:`~online_cnmfe.triggers.records`: :class:`TriggerRecord` (stored in the results file by
  :mod:`online_cnmfe.results.triggers_table`).

See docs/closed-loop.md.
"""

from online_cnmfe.triggers.config import (
    TriggerConfig,
    load_trigger_config,
    parse_trigger_config,
)
from online_cnmfe.triggers.evaluator import TriggerEngine
from online_cnmfe.triggers.records import TriggerRecord
from online_cnmfe.triggers.regions import Region
from online_cnmfe.triggers.rules import Rule, parse_rule

__all__ = [
    "Region",
    "Rule",
    "TriggerConfig",
    "TriggerEngine",
    "TriggerRecord",
    "load_trigger_config",
    "parse_rule",
    "parse_trigger_config",
]
