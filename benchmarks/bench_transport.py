"""Frame transport benchmark: publisher process → FrameSubscriber over tcp and ipc.

Measures, for frames of ``--size`` (default 608×608 uint8, a Miniscope V4 frame):

- throughput: frames/s at ``--rate max`` (lossless back-pressure), publisher in a child process;
- latency: per-frame transport latency (subscriber ``monotonic_ns`` after decode minus the
  header's ``t_send_ns``; CLOCK_MONOTONIC is system-wide so the two processes share it) at a
  paced rate (default 200 Hz, so frames do not queue), p50/p99/max;
- the same latency with bare pyzmq (PUB/SUB, a timestamp part, no protocol code), as the
  baseline of the machine in the same run;
- encode+decode cost alone (no sockets), for reference;
- the rate of reading Miniscope-like AVI chunks (FFV1 and GREY) through ``open_source``, the
  ceiling of ``acquire replay --rate max``.

Targets: >= 2000 frames/s and p99 < 1 ms. Prints a table and a JSON line.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_transport.py
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.protocol import FrameMessage, decode_frame, encode_frame  # noqa: E402
from acquisition.publisher import FramePublisher, PublisherConfig  # noqa: E402
from acquisition.sources.base import FrameSource, SourceFrame, SourceInfo  # noqa: E402
from acquisition.subscriber import FrameSubscriber  # noqa: E402


class MemorySource(FrameSource):
    """``n`` frames cycling through a few pre-generated images (no decoding cost)."""

    def __init__(self, n: int, shape: tuple[int, int], rate_hz: float) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (8, *shape), dtype=np.uint8)
        self.n, self.rate = n, rate_hz

    def _raw_info(self) -> SourceInfo:
        shape = self.images.shape[1:]
        return SourceInfo(self.rate, shape, "uint8", self.n, "memory", "synthetic", {})

    def _iter_raw(self, start: int):
        period = 1000.0 / self.rate
        for i in range(start, self.n):
            yield SourceFrame(i, i * period, None, self.images[i % len(self.images)])


def _publish(endpoint: str, n: int, shape, rate, sndhwm: int) -> None:
    config = PublisherConfig(
        endpoint=endpoint,
        rate=rate,
        sndhwm=sndhwm,
        wait_for_subscriber_s=30.0,
        eos_repeat_s=0.3,
    )
    with FramePublisher(config) as publisher:
        publisher.publish(MemorySource(n, shape, 1000.0))


def run_case(endpoint: str, n: int, shape, rate, rcvhwm: int) -> dict:
    """One publisher process → one subscriber; returns rate and latency figures."""
    proc = mp.get_context("fork").Process(target=_publish, args=(endpoint, n, shape, rate, 64))
    sub = FrameSubscriber(endpoint, rcvhwm=rcvhwm)
    proc.start()
    latencies = np.empty(n, dtype=np.float64)
    received = 0
    t_first = t_last = None
    while True:
        frame = sub.recv(30000)
        if frame is None:
            break
        now = time.monotonic_ns()
        latencies[received] = (now - frame.t_send_ns) / 1e3  # µs
        received += 1
        t_first = t_first or now
        t_last = now
    proc.join(30)
    sub.close()
    lat = latencies[:received]
    elapsed = (t_last - t_first) / 1e9 if received > 1 else float("nan")
    return {
        "endpoint": endpoint.split(":")[0],
        "rate": rate,
        "n": n,
        "received": received,
        "dropped": sub.stats.n_dropped,
        "frames_per_s": (received - 1) / elapsed if received > 1 else 0.0,
        "MB_per_s": float((received - 1) * np.prod(shape) / elapsed / 1e6) if received > 1 else 0.0,
        "lat_p50_us": float(np.percentile(lat, 50)),
        "lat_p99_us": float(np.percentile(lat, 99)),
        "lat_max_us": float(lat.max()),
    }


def _raw_publish(endpoint: str, n: int, shape, rate: float) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.bind(endpoint)
    sock.recv()  # subscription handshake
    images = np.random.default_rng(0).integers(0, 256, (8, *shape), dtype=np.uint8)
    t0 = time.monotonic()
    for i in range(n + 5):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamp = b"0" if i >= n else str(time.monotonic_ns()).encode()
        sock.send_multipart([b"frame", stamp, images[i % 8]], copy=False)
    sock.close(linger=1000)
    ctx.term()


def run_raw_case(endpoint: str, n: int, shape, rate: float) -> dict:
    """Baseline: bare pyzmq PUB/SUB with a timestamp part, no protocol code, same pacing."""
    proc = mp.get_context("fork").Process(target=_raw_publish, args=(endpoint, n, shape, rate))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"frame")
    sock.connect(endpoint)
    proc.start()
    lat = []
    while sock.poll(30000):
        parts = sock.recv_multipart(copy=False)
        now = time.monotonic_ns()
        stamp = int(parts[1].bytes)
        if stamp == 0:
            break
        lat.append((now - stamp) / 1e3)
    proc.join(30)
    sock.close(linger=0)
    ctx.term()
    lat = np.array(lat)
    return {
        "endpoint": endpoint.split(":")[0],
        "rate": f"raw{rate:g}",
        "n": n,
        "received": int(lat.size),
        "dropped": n - int(lat.size),
        "frames_per_s": float("nan"),
        "MB_per_s": float("nan"),
        "lat_p50_us": float(np.percentile(lat, 50)),
        "lat_p99_us": float(np.percentile(lat, 99)),
        "lat_max_us": float(lat.max()),
    }


def codec_cost(shape, n: int = 2000) -> float:
    """µs per encode + decode (bytes copy on decode side, like a socket would)."""
    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    msg = FrameMessage(0, 0, None, 0.0, 0, "s", "replay", pixels)
    t0 = time.perf_counter()
    for _ in range(n):
        frames = encode_frame(msg)
        decode_frame(frames)
    return (time.perf_counter() - t0) / n * 1e6


def decode_rates(shape, n: int = 200) -> dict:
    """Frames/s of reading a Miniscope-like AVI chunk (FFV1 and GREY) through open_source."""
    import av
    from scipy.ndimage import gaussian_filter

    from acquisition.sources import open_source

    rng = np.random.default_rng(2)
    base = gaussian_filter(rng.normal(size=shape), 20)
    base = (base - base.min()) / (base.max() - base.min()) * 150 + 40
    movie = np.clip(base[None] + rng.normal(0, 8, (n, *shape)), 0, 255).astype(np.uint8)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for codec in ("ffv1", "rawvideo"):
            path = Path(tmp) / f"{codec}.avi"
            with av.open(str(path), "w") as container:
                stream = container.add_stream(codec, rate=60)
                stream.width, stream.height, stream.pix_fmt = shape[1], shape[0], "gray"
                for frame in movie:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="gray")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            t0 = time.perf_counter()
            count = sum(1 for _ in open_source(path, frame_rate_hz=20.0))
            out[codec] = count / (time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", nargs=2, type=int, default=(608, 608), metavar=("H", "W"))
    parser.add_argument("--frames", type=int, default=5000, help="frames per throughput run")
    parser.add_argument("--latency-frames", type=int, default=1000)
    parser.add_argument("--latency-rate", type=float, default=200.0, help="Hz for latency runs")
    parser.add_argument("--port", type=int, default=5789)
    args = parser.parse_args()
    shape = tuple(args.size)
    tmp = tempfile.mkdtemp(prefix="bench_transport_")
    endpoints = {"tcp": f"tcp://127.0.0.1:{args.port}", "ipc": f"ipc://{tmp}/frames"}
    rows = []
    for name, endpoint in endpoints.items():
        rows.append(run_case(endpoint, args.frames, shape, "max", rcvhwm=64))
        rows.append(run_case(endpoint, args.latency_frames, shape, args.latency_rate, 1000))
        rows.append(run_raw_case(endpoint, args.latency_frames, shape, args.latency_rate))
        for row in rows[-3:]:
            row["transport"] = name
    codec_us = codec_cost(shape)
    decode = decode_rates(shape)
    print(f"frames {shape[0]}x{shape[1]} uint8; nproc {os.cpu_count()}; codec {codec_us:.1f} µs")
    print(
        f"reading AVI chunks through open_source: FFV1 {decode['ffv1']:.0f} frames/s, "
        f"GREY {decode['rawvideo']:.0f} frames/s"
    )
    print(f"{'transport':9} {'rate':>8} {'frames':>6} {'recv':>6} {'drop':>5} {'frames/s':>9} "
          f"{'MB/s':>7} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>8}")  # fmt: skip
    for r in rows:
        print(
            f"{r['transport']:9} {str(r['rate']):>8} {r['n']:>6} {r['received']:>6} "
            f"{r['dropped']:>5} {r['frames_per_s']:>9.0f} {r['MB_per_s']:>7.0f} "
            f"{r['lat_p50_us']:>8.0f} {r['lat_p99_us']:>8.0f} {r['lat_max_us']:>8.0f}"
        )
    summary = {"bench": "transport", "shape": shape, "codec_us": codec_us, "decode_fps": decode}
    print(json.dumps({**summary, "runs": rows}))


if __name__ == "__main__":
    main()
