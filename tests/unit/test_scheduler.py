"""Scheduled jobs run once per period, one process at a time, and are not lost when the
process running one dies (the embedded store's file lock; PostgreSQL's advisory lock is
tested in tests/postgres). Bounded in count and time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from keysafe.scheduler import Job, Scheduler, run_locally_exclusive


def test_runs_when_due_and_not_again_within_the_period(tmp_path: Path) -> None:
    runs: list[int] = []
    assert run_locally_exclusive(tmp_path, "job", 3600, lambda: runs.append(1))
    assert not run_locally_exclusive(tmp_path, "job", 3600, lambda: runs.append(2))
    assert runs == [1]
    assert float((tmp_path / "job.lock").read_text()) > time.time() + 3500
    assert run_locally_exclusive(tmp_path, "other", 3600, lambda: runs.append(3))
    assert runs == [1, 3]


def test_a_failed_run_stays_due(tmp_path: Path) -> None:
    def boom() -> None:
        raise RuntimeError("fails")

    with pytest.raises(RuntimeError):
        run_locally_exclusive(tmp_path, "job", 3600, boom)
    runs: list[int] = []
    assert run_locally_exclusive(tmp_path, "job", 3600, lambda: runs.append(1))
    assert runs == [1]


def test_racing_runners_run_the_job_once(tmp_path: Path) -> None:
    runs: list[int] = []
    start = threading.Barrier(6)

    def slow() -> None:
        runs.append(1)
        time.sleep(0.3)

    def racer() -> None:
        start.wait(timeout=10)
        run_locally_exclusive(tmp_path, "job", 3600, slow)

    threads = [threading.Thread(target=racer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert runs == [1]


def test_a_holder_killed_mid_job_leaves_the_job_due(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    code = (
        "import sys, time, pathlib\n"
        "from keysafe.scheduler import run_locally_exclusive\n"
        f"def job():\n    pathlib.Path({str(marker)!r}).write_text('x')\n    time.sleep(60)\n"
        f"run_locally_exclusive(pathlib.Path({str(tmp_path)!r}), 'job', 3600, job)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists()
        # While it holds the lock, nobody else runs the job.
        assert not run_locally_exclusive(tmp_path, "job", 3600, lambda: None)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    runs: list[int] = []
    assert run_locally_exclusive(tmp_path, "job", 3600, lambda: runs.append(1))
    assert runs == [1]


def test_scheduler_thread_runs_due_jobs_and_stops(tmp_path: Path) -> None:
    ran = threading.Event()
    sched = Scheduler(object(), [Job("tick", 0.05, ran.set)], lock_dir=tmp_path,
                      tick=0.05, first_delay=0.0)
    sched.start()
    try:
        assert ran.wait(10)
    finally:
        sched.close()
    assert sched.runs["tick"] >= 1


def test_a_failing_job_does_not_stop_the_others(tmp_path: Path) -> None:
    def boom() -> None:
        raise RuntimeError("x")

    ok: list[int] = []
    sched = Scheduler(object(), [Job("bad", 60, boom), Job("good", 60, lambda: ok.append(1))],
                      lock_dir=tmp_path)
    assert sched.run_pending() == ["good"]
    assert ok == [1]
    assert sched.runs == {"bad": 0, "good": 1}
