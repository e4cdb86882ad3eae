"""A synthetic results-stream publisher for the dashboard's tests and benchmark.

It sends real protocol messages (acquisition.protocol.encode_message) of every results topic
over a real PUB socket: ``ready`` + ``status`` every second, ``traces`` every frame,
``footprints`` at start, on births and every 2 s for late joiners, ``image`` layers at 10 Hz,
``event`` on births, ``trigger`` when neuron 0 crosses a threshold, ``eos`` at the end.
Neurons are Gaussian blobs with AR(1) calcium traces driven by Poisson spikes.

Run as a script: ``python tests/dashboard/fake_engine.py tcp://127.0.0.1:5556 --seconds 5``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy.sparse
import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from online_cnmfe.results import stream as rs  # noqa: E402


class SyntheticSession:
    """A deterministic fake engine state: footprints, traces, images.

    Parameters
    ----------
    dims : (int, int)
    n_neurons : int
        Neurons present from the start.
    n_born : int
        Neurons born later (one every ``born_every`` frames).
    seed : int
    """

    def __init__(self, dims=(128, 160), n_neurons=20, n_born=3, born_every=60, seed=0):
        self.dims = tuple(dims)
        self.rng = np.random.default_rng(seed)
        h, w = self.dims
        total = n_neurons + n_born
        margin = 6
        self.centers = np.stack(
            [
                self.rng.uniform(margin, h - margin, total),
                self.rng.uniform(margin, w - margin, total),
            ],
            axis=1,
        )
        self.n_initial, self.born_every = n_neurons, born_every
        self.total = total
        rr, cc = np.mgrid[0:h, 0:w]
        rows, cols, vals = [], [], []
        for k, (r, c) in enumerate(self.centers):  # Gaussian blobs, cut at 5 % of the peak
            r0, r1 = max(0, int(r) - 7), min(h, int(r) + 8)
            c0, c1 = max(0, int(c) - 7), min(w, int(c) + 8)
            br, bc = np.mgrid[r0:r1, c0:c1]
            blob = np.exp(-((br - r) ** 2 + (bc - c) ** 2) / (2 * 2.5**2))
            keep = blob >= 0.05
            rows.append((br * w + bc)[keep])
            cols.append(np.full(keep.sum(), k))
            vals.append(blob[keep])
        self.A = scipy.sparse.csc_array(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=(h * w, total),
        )
        self.A.sort_indices()
        self.image_downsample = max(1, int(np.ceil(max(h, w) / 256)))  # like the engine
        self.c = np.zeros(total, np.float32)
        self.gamma = 0.92
        self.rates = self.rng.uniform(0.02, 0.12, total)
        self.bg = 40 + 30 * np.exp(-((rr - h / 2) ** 2 + (cc - w / 2) ** 2) / (2 * (w / 2.5) ** 2))
        self.bg = self.bg.astype(np.float32)
        self.vmax = np.zeros(self.dims, np.float32)
        self.session_id = f"fake-{seed}"
        self.footprints_version = 0

    def n_alive(self, frame: int) -> int:
        return min(self.total, self.n_initial + frame // self.born_every)

    def footprints_message(self, frame: int):
        """The ``footprints`` message (encoded frames) of the neurons alive at ``frame``."""
        k = self.n_alive(frame)
        A = self.A[:, :k]
        ids = np.arange(k, dtype=np.int64) + 100
        return rs.encode_footprints(A, ids, self.footprints_version, self.dims)

    def step(self, frame: int, fps: float, t0_ns: int):
        """Encoded messages of one frame: traces (+ born event, footprints, trigger)."""
        out = []
        k = self.n_alive(frame)
        if frame > 0 and k > self.n_alive(frame - 1):
            self.footprints_version += 1
            out.append(rs.encode_event("born", frame, [100 + k - 1], "synthetic birth"))
            out.append(self.footprints_message(frame))
        spikes = (self.rng.random(self.total) < self.rates).astype(np.float32)
        spikes *= self.rng.uniform(0.5, 1.5, self.total).astype(np.float32)
        self.c = self.gamma * self.c + spikes
        noise = self.rng.normal(0, 0.05, self.total).astype(np.float32)
        t_acq = 1000.0 * frame / fps
        meta = {
            "frame_index": frame,
            "seq": frame,
            "t_acq_ms": t_acq,
            "t_send_ns": time.monotonic_ns(),
        }
        ids = np.arange(k, dtype=np.int64) + 100
        age = 1.0 + (frame % 7) * 0.3
        out.append(
            rs.encode_traces(
                meta,
                ids,
                self.c[:k],
                spikes[:k],
                self.c[:k] + noise[:k],
                self.footprints_version,
                age,
            )
        )
        if spikes[0] > 0 and frame > 5:
            age = 1.0 + 0.5 * (frame % 3)
            out.append(rs.encode_trigger("neuron 100 event", frame, t_acq, self.c[0], age, [100]))
        return out

    def images(self, frame: int):
        """Image layers of the current frame."""
        h, w = self.dims
        k = self.n_alive(frame)
        ac = (self.A[:, :k] @ (40 * self.c[:k])).reshape(h, w).astype(np.float32)
        noise = self.rng.normal(0, 4, (h, w)).astype(np.float32)
        raw = self.bg + ac + noise
        np.maximum(self.vmax, raw, out=self.vmax)
        d = self.image_downsample
        layers = {
            "raw": raw,
            "background_subtracted": ac + noise,
            "denoised": ac,
            "residual": noise,
            "corr_pnr": 20 * ac / max(float(ac.max()), 1e-6),
            "max_projection": self.vmax,
        }

        def block_mean(img: np.ndarray) -> np.ndarray:
            hh, ww = img.shape[0] // d * d, img.shape[1] // d * d
            return img[:hh, :ww].reshape(hh // d, d, ww // d, d).mean(axis=(1, 3))

        return [rs.encode_image(frame, n, block_mean(im), d) for n, im in layers.items()]

    def status(self, frame: int, fps: float, phase: str = "running"):
        return rs.encode_status(
            {
                "frame_index": frame,
                "n_frames_processed": frame + 1,
                "fps_in": fps,
                "fps_processed": fps,
                "queue_depth": 0,
                "latency_ms_p50": 1.2,
                "latency_ms_p99": 2.5,
                "n_neurons": self.n_alive(frame),
                "n_dropped": 0,
                "n_rejected": 0,
                "n_malformed": 0,
                "phase": phase,
                "init_progress": 1.0,
                "store_ok": True,
                "store_error": None,
                "dims": list(self.dims),
            }
        )


def publish(
    address: str,
    seconds: float,
    fps: float = 30.0,
    seed: int = 0,
    dims=(128, 160),
    n_neurons: int = 20,
    image_hz: float = 10.0,
    eos: bool = True,
    socket: zmq.Socket | None = None,
    stop=None,
) -> int:
    """Bind a PUB at ``address`` and stream a synthetic session for ``seconds``."""
    ctx = zmq.Context.instance()
    own = socket is None
    sock = socket or ctx.socket(zmq.PUB)
    if own:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.bind(address)
    session = SyntheticSession(dims=dims, n_neurons=n_neurons, seed=seed)
    session.session_id = f"fake-{seed}-{os.getpid()}-{time.monotonic_ns()}"
    t0 = time.monotonic_ns()
    start = time.monotonic()
    frame, last_status, last_fp, last_img = 0, -1.0, -1.0, -1.0

    def send(msgs):
        for frames in msgs:
            sock.send_multipart(frames, copy=False)

    while time.monotonic() - start < seconds and not (stop is not None and stop.is_set()):
        now = time.monotonic()
        if now - last_status >= 1.0:
            send([rs.encode_ready(session.session_id, os.getpid()), session.status(frame, fps)])
            last_status = now
        if now - last_fp >= 2.0:
            send([session.footprints_message(frame)])
            last_fp = now
        send(session.step(frame, fps, t0))
        if now - last_img >= 1.0 / image_hz:
            send(session.images(frame))
            last_img = now
        frame += 1
        delay = start + frame / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    if eos:
        send([rs.encode_eos(frame, "complete")])
    if own:
        sock.close(linger=0)
    return frame


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("address")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--neurons", type=int, default=20)
    p.add_argument("--dims", type=int, nargs=2, default=(128, 160))
    p.add_argument("--no-eos", action="store_true")
    a = p.parse_args()
    publish(a.address, a.seconds, a.fps, a.seed, tuple(a.dims), a.neurons, eos=not a.no_eos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
