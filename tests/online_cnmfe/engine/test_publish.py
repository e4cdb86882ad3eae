"""The engine's footprints publication (engine/publish.py) on stubs: encoded only for a
subscriber, the same message either way, the centroids computed once."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import scipy.sparse

from online_cnmfe.engine.publish import PublishingMixin
from online_cnmfe.results import stream as rs

DIMS = (16, 12)


class _Publisher:
    def __init__(self) -> None:
        self.sent: list[list] = []
        self.subscribed = False

    def send(self, frames: list) -> None:
        self.sent.append([bytes(f) for f in frames])

    def wants(self, topic: str) -> bool:
        return self.subscribed


class _Engine(PublishingMixin):
    def __init__(self, A, ids) -> None:
        model = SimpleNamespace(footprints=A, neuron_ids=ids, footprints_version=3)
        self.runner = SimpleNamespace(model=model, dims=DIMS, phase="running", corr_pnr=None)
        self.publisher = _Publisher()
        self.ids = SimpleNamespace(cover=lambda ids: None)
        self.stored: list = []
        self.store = SimpleNamespace(submit=lambda *a: self.stored.append(a))
        self.images = None
        self._fp_version, self._fp_ids, self._fp_sent_s = None, None, -np.inf
        self._fp_latest, self._fp_message = None, None
        self.centroids: list = []
        self.footprints_callbacks = [lambda ids, cents: self.centroids.append((ids, cents))]


def _footprints(rng):
    A = scipy.sparse.random(DIMS[0] * DIMS[1], 5, density=0.1, format="csc", random_state=1)
    return scipy.sparse.csc_array(A.astype(np.float32)), np.array([4, 8, 9, 11, 20], np.int64)


def test_footprints_without_a_subscriber_are_stored_not_encoded(rng, monkeypatch):
    A, ids = _footprints(rng)
    engine = _Engine(A, ids)
    encoded = []
    real = rs.encode_footprints
    monkeypatch.setattr(rs, "encode_footprints", lambda *a: encoded.append(1) or real(*a))
    engine._send_footprints()
    assert engine.publisher.sent == [] and encoded == []
    assert engine.stored[0][0] == "footprints" and engine.stored[0][3] == 3
    (cb_ids, cents), expected = engine.centroids[0], rs.centroids(A, DIMS)
    np.testing.assert_array_equal(cb_ids, ids)
    np.testing.assert_array_equal(cents, expected)
    engine._republish()  # still nobody: nothing built
    assert engine.publisher.sent == [] and encoded == []
    engine.publisher.subscribed = True  # a late joiner: at the next republish, encoded once
    engine._republish()
    engine._republish()
    assert encoded == [1]
    assert engine.publisher.sent == [[bytes(f) for f in real(A, ids, 3, DIMS)]] * 2


def test_footprints_with_a_subscriber_go_out_at_once_as_before(rng):
    A, ids = _footprints(rng)
    engine = _Engine(A, ids)
    engine.publisher.subscribed = True
    engine._send_footprints()
    assert engine.publisher.sent == [[bytes(f) for f in rs.encode_footprints(A, ids, 3, DIMS)]]
    msg = rs.decode_result(engine.publisher.sent[0])
    np.testing.assert_array_equal(msg.arrays["centroids"], rs.centroids(A, DIMS))
    cents = engine.centroids[0][1]
    cents[:] = -1  # a callback's copy is its own: the cached message is untouched
    engine._republish()
    assert engine.publisher.sent[1] == engine.publisher.sent[0]
