"""A writer process for tests/integration/test_durability.py (a script, not a test).

    python helpers_writer.py cas <worker> <count> <seconds>
        Check-and-set loop on one secret: read the current version, put with
        expected_version, retry on Conflict. Prints "ack <version> <value>" after each
        put returns.
    python helpers_writer.py stream <tag> <count>
        Plain puts of numbered values, rotating over three secrets. Prints
        "ack <name> <version> <value>" after each put returns.

Each line is flushed at once, so a line on stdout means the write was acknowledged.
The store comes from KEYSAFE_* variables (KEYSAFE_HOME, KEYSAFE_MASTER_KEY, ...).
"""

from __future__ import annotations

import sys
import time

from keysafe import BackendUnavailable, Conflict, NotFound, SecretManager

ORG = "acme"
CAS_NAME = "counter"
STREAM_NAMES = ("stream-a", "stream-b", "stream-c")


def cas(worker: int, count: int, seconds: float) -> int:
    m = SecretManager.from_env()
    end = time.monotonic() + seconds
    tries = 0
    for i in range(count):
        value = f"w{worker}-{i}"
        while True:
            if time.monotonic() > end or tries > 200_000:
                print(f"gave-up {i}", flush=True)
                return 3
            tries += 1
            try:
                current = m.describe(CAS_NAME, ORG).current_version
            except NotFound:
                current = 0
            try:
                info = m.put(CAS_NAME, value, ORG, expected_version=current)
            except (Conflict, BackendUnavailable):
                continue
            print(f"ack {info.version} {value}", flush=True)
            break
    m.close()
    return 0


def stream(tag: str, count: int) -> int:
    m = SecretManager.from_env()
    print("ready", flush=True)
    for i in range(count):
        name = STREAM_NAMES[i % len(STREAM_NAMES)]
        value = f"{tag}-{i}-" + "v" * (i % 97)
        info = m.put(name, value, ORG)
        print(f"ack {name} {info.version} {value}", flush=True)
    m.close()
    return 0


def main(argv: list[str]) -> int:
    if argv[1] == "cas":
        return cas(int(argv[2]), int(argv[3]), float(argv[4]))
    if argv[1] == "stream":
        return stream(argv[2], int(argv[3]))
    print(f"unknown mode {argv[1]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
