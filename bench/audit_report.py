"""`keysafe audit report`'s cost on the embedded store: a store holding N audit records
(20 identities reading and writing 100,000 secret paths), then the report over a 7-day
window that holds them all, with and without the unread check, beside one ``GROUP BY
actor`` pass with a distinct count of paths over the same records (the floor: the
report asks three such questions, plus one over the records before the window).

    .venv/bin/python bench/audit_report.py                 # 1,000,000 records, ~30 s
    .venv/bin/python bench/audit_report.py --records 100000 --repeats 5

Records are appended straight into the audit store, in batches of 20,000 (chained as
the manager chains them). The scratch store lives in bench/.work/audit-report/
(git-ignored) and is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work" / "audit-report"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.records < 1 or not 1 <= args.repeats <= 20:
        ap.error("--records must be positive and --repeats 1..20")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    os.environ["KEYSAFE_HOME"] = str(WORK)
    from keysafe import SecretManager
    from keysafe.manager.access import access_report

    rng = random.Random(7)
    try:
        m = SecretManager.from_env(backend="sqlite")
        for i in range(1000):  # live secrets for the unread check
            m.put(f"bench_{i}", f"value-{i}", "acme")
        t0 = time.perf_counter()
        actors = [f"svc-{i}" for i in range(20)]
        batch = []
        for i in range(args.records):
            m.actor = rng.choice(actors)
            batch.append(m.draft("read_value" if i % 10 else "write",
                                 f"keysafe/local/acme/shared/bench_{rng.randrange(100_000)}",
                                 "ok" if i % 97 else "denied", org="acme"))
            if len(batch) == 20_000 or i == args.records - 1:
                with m._tx():
                    m.audit.store.append(batch)
                batch = []
        m.actor = "bench"
        print(f"appended {args.records:,} records in {time.perf_counter() - t0:.1f} s")
        since = datetime.now(UTC) - timedelta(days=7)
        conn = m.audit.store._host.connection  # type: ignore[attr-defined]

        def timed(fn: object) -> float:
            runs = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                fn()  # type: ignore[operator]
                runs.append(time.perf_counter() - t)
            return statistics.median(runs)

        floor = timed(lambda: conn.execute(
            "SELECT actor, count(*), count(DISTINCT path) FROM audit GROUP BY actor").fetchall())
        plain = timed(lambda: access_report(m, since=since, unread=False))
        full = timed(lambda: access_report(m, since=since, unread=True))
        rep = access_report(m, since=since)
        print(f"records {args.records:,}; identities {len(rep.actors)}; findings "
              f"{len(rep.findings)}; median of {args.repeats}")
        print(f"  one GROUP BY actor pass (the floor)    {floor:8.3f} s")
        print(f"  report, no unread check                {plain:8.3f} s  "
              f"({plain / floor:.1f}x the floor)")
        print(f"  report with the unread check           {full:8.3f} s  "
              f"({full / floor:.1f}x the floor)")
        m.close()
    finally:
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
