"""Fixtures for the Kubernetes tests: a clean keysafe home with a store, the CLI in
process, and the STAND-IN Kubernetes API server (fakekube.py) with a kubeconfig."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keysafe.cli.app import app

from .fakekube import FakeKubeServer

pytest.importorskip("kubernetes")


@dataclass
class Run:
    code: int
    out: str
    err: str


Cli = Callable[..., Run]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """KEYSAFE_HOME in a fresh directory, no KEYSAFE_*/ENVIRONMENT/KUBECONFIG from the
    outside, and a fresh working directory."""
    for var in list(os.environ):
        if var.startswith(("KEYSAFE_", "KUBERNETES_")) or var in ("ENVIRONMENT",
                                                                   "KUBECONFIG"):
            monkeypatch.delenv(var)
    h = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("KEYSAFE_HOME", str(h))
    monkeypatch.setenv("KEYSAFE_ACTOR", "tester")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config from the machine
    monkeypatch.chdir(work)
    return h


@pytest.fixture
def kc(home: Path) -> Cli:
    """The typer app in process: kc("put", "x", "--org", "a", input="v")."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Run:
        r = runner.invoke(app, list(args), input=input)
        err = r.stderr
        if r.exception is not None and r.exit_code == 1:
            # An unexpected exception (exit 1) shows in the test's failure message.
            import traceback

            err += "".join(traceback.format_exception(r.exception))
        return Run(r.exit_code, r.stdout, err)

    return run


@pytest.fixture
def fake_kube(tmp_path: Path) -> Iterator[FakeKubeServer]:
    with FakeKubeServer() as server:
        server.kubeconfig(tmp_path / "kubeconfig")
        yield server
