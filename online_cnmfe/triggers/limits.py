"""Limits on closed-loop rules and on the control socket (one place, docs/security.md).

150 rules of 100,000 neuron ids each cut an engine from 100 to 41 frames/s and wrote 105 MB
into its results file and 103 MB into its log: a rule set is now bounded in count and size,
control requests in size and rate, and rejected requests are logged at a bounded rate.
"""

MAX_RULES = 64  # rules at once (config file and control socket together)
MAX_RULE_NEURONS = 1000  # neuron ids listed by one rule
MAX_TOTAL_NEURONS = 10_000  # neuron ids listed by all rules together
MAX_REQUEST_BYTES = 64 * 1024  # one control request (a larger one disconnects the client)
MAX_CHANGES_PER_S = 10.0  # rule changes (add/remove/enable/disable) per second, sustained
MAX_CHANGE_BURST = 50  # rule changes accepted at once before the rate applies
