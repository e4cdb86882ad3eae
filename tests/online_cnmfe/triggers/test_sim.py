"""Triggers against the simulator's truth: chosen neurons' known spikes must produce triggers at
the right frames (loose floors; the figures are in benchmarks/bench_triggers.py)."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.simulator import MiniscopeSimulator, SimulationParams
from online_cnmfe.model.online import OnlineCNMFE
from online_cnmfe.params import CNMFEParams
from online_cnmfe.results import stream as rs
from online_cnmfe.triggers import TriggerEngine, parse_rule

pytestmark = pytest.mark.timeout(240)
INIT, T, TOL = 200, 1400, 2


def score(fired: np.ndarray, spike_pnr: np.ndarray, start: int) -> tuple[int, int, int]:
    """(hits, spikes with PNR >= 5, false alarms) for one neuron's trigger frames."""
    big = [t for t in np.nonzero(spike_pnr >= 5)[0] if t >= start]
    hits = sum(bool(np.any((fired >= t) & (fired <= t + TOL))) for t in big)
    spikes = np.nonzero(spike_pnr > 0)[0]
    false = sum(not np.any((spikes <= f) & (spikes >= f - TOL)) for f in fired)
    return hits, len(big), false


def test_region_rules_fire_on_the_true_spikes_of_simulated_neurons():
    sp = SimulationParams(height=96, width=96, n_frames=T, n_neurons=10, seed=4)
    sim = MiniscopeSimulator(sp)
    frames = sim.frames(0, T)
    pnr = sim.spikes(0, T) / sp.noise_sigma
    model = OnlineCNMFE(CNMFEParams.from_dict({"init": {"init_frames": INIT}}))
    model.initialize(frames[:INIT])

    def centroids():
        return model.neuron_ids, rs.centroids(model.footprints, model.dims)

    rules = [
        parse_rule({"name": f"cell{k}", "signal": "rise", "condition": "threshold",
                    "threshold": 4.0, "release": 1.0,
                    "region": {"shape": "circle", "center": [float(c) for c in centre],
                               "radius": sp.neuron_diameter_px / 2}})
        for k, centre in enumerate(sim.truth.centres)
    ]  # fmt: skip
    eng = TriggerEngine(rules, frame_rate_hz=sp.frame_rate_hz, centroid_source=centroids)
    eng.update_centroids(*centroids())
    for t in range(INIT, T):
        recs = eng.on_frame(model.process_frame(frames[t]), {"frame_index": t})
        assert all(r.frame_index == t for r in recs)  # a trigger belongs to the frame that fired
    found = [r["name"] for r in eng.list_rules() if r["state"]["active"]]
    assert len(found) >= 7, found  # most true neurons have a model neuron at their centre
    hits = n_big = false = n_fired = 0
    for k in range(sp.n_neurons):
        if f"cell{k}" not in found:
            continue
        fired = np.array([r.frame_index for r in eng.fired if r.rule == f"cell{k}"], int)
        h, n, f = score(fired, pnr[k], INIT + 20)  # z-score warm-up
        hits, n_big, false, n_fired = hits + h, n_big + n, false + f, n_fired + len(fired)
    assert n_big >= 25
    # loose floors (measured 36/36 hits, 30 false of 110 triggers); benchmark target 0.9
    assert hits / n_big >= 0.75, (hits, n_big)
    assert false <= 0.45 * n_fired, (false, n_fired)
