"""Turn closed-loop triggers into TTL pulses on a serial device (e.g. the Arduino sketch in
docs/closed-loop.md: each byte 'A'..'H' pulses pin 2..9).

Run next to an engine started with a [triggers] config::

    python examples/ttl_serial.py --listen tcp://127.0.0.1:5557 --port /dev/ttyACM0 \\
        --map cell12=A ca1_burst=B

Each trigger of rule R writes the byte mapped to R (default 'A'). Prints one line per trigger
with the frame age at firing and the extra delay to the serial write on this side. A device that
disappears is reported and reopened every second; the listener keeps going.
"""

from __future__ import annotations

import argparse
import logging
import time

from online_cnmfe.triggers.actions import SerialOutput
from online_cnmfe.triggers.client import TriggerListener


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--listen", default="tcp://127.0.0.1:5557", help="engine trigger socket")
    p.add_argument("--pull", action="store_true", help="the trigger socket is PUSH")
    p.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyACM0 or COM3")
    p.add_argument("--baudrate", type=int, default=115200)
    p.add_argument("--map", nargs="*", default=[], metavar="RULE=BYTE", help="byte per rule")
    p.add_argument("--default", default="A", help="byte for rules not in --map (default A)")
    p.add_argument("--count", type=int, help="stop after N triggers")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    mapping = {}
    for item in args.map:
        rule, sep, byte = item.partition("=")
        if not sep or len(byte) != 1:
            p.error(f"--map expects RULE=BYTE with one character, got {item!r}")
        mapping[rule] = byte.encode("ascii")
    default = args.default.encode("ascii")[:1]
    serial = SerialOutput(args.port, args.baudrate, reconnect_s=1.0)
    serial.open()
    n = 0
    with TriggerListener(args.listen, "pull" if args.pull else "sub") as listener:
        print(f"listening on {args.listen}; writing to {args.port}")  # noqa: T201
        for trig in listener:
            ok = serial.write(mapping.get(trig.rule, default))
            extra_ms = (time.monotonic_ns() - trig.t_fire_ns) / 1e6 if trig.t_fire_ns > 0 else 0
            print(  # noqa: T201
                f"{trig.rule:>16} frame {trig.frame_index:>7}  age at firing {trig.age_ms:6.2f} ms"
                f"  +{extra_ms:5.2f} ms to serial  {'ok' if ok else 'SERIAL FAILED'}"
            )
            n += 1
            if args.count is not None and n >= args.count:
                break
    serial.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
