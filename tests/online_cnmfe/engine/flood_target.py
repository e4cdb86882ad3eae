"""A results publisher to flood: ``python -m tests.online_cnmfe.engine.flood_target ENDPOINT``.

Publishes a ``status``-sized and a ``traces``-sized message every 10 ms on
:class:`~online_cnmfe.engine.publish.ResultsPublisher` (``--plain-pub``: a plain PUB socket,
the old behaviour) and prints ``rss_mb N`` every 0.5 s, until killed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import zmq


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("--plain-pub", action="store_true")
    args = p.parse_args()
    ctx = zmq.Context()
    if args.plain_pub:
        sock = ctx.socket(zmq.PUB)
        sock.bind(args.endpoint)
        send = sock.send_multipart
    else:
        from online_cnmfe.engine.publish import ResultsPublisher

        send = ResultsPublisher(args.endpoint, ctx).send
    next_report = 0.0
    i = 0
    while True:
        send([b"status", b'{"i": %d}' % i])
        send([b"traces", bytes(400)])
        i += 1
        now = time.monotonic()
        if now >= next_report:
            sys.stdout.write(f"rss_mb {rss_mb():.1f} sent {i}\n")
            sys.stdout.flush()
            next_report = now + 0.5
        time.sleep(0.01)


if __name__ == "__main__":
    main()
