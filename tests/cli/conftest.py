"""CLI test helpers: a clean KEYSAFE_HOME per test, the typer app in process, and the
installed console script as a real subprocess (exit codes, stdin, the fast path)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from keysafe.cli.app import app

BIN = Path(sys.executable).parent
KEYSAFE = str(BIN / "keysafe")


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> object:
        import json

        return json.loads(self.out)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """KEYSAFE_HOME in a fresh directory, no other KEYSAFE_*/ENVIRONMENT variable, and
    a fresh working directory (no stray keysafe.toml). Never ~/.keysafe."""
    for var in list(os.environ):
        if var.startswith("KEYSAFE_") or var == "ENVIRONMENT":
            monkeypatch.delenv(var)
    h = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("KEYSAFE_HOME", str(h))
    monkeypatch.setenv("KEYSAFE_ACTOR", "tester")
    monkeypatch.chdir(work)
    return h


Ks = Callable[..., Run]


@pytest.fixture(scope="session")
def pycache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Bytecode for subprocesses, kept out of the source tree."""
    return str(tmp_path_factory.mktemp("pycache"))


@pytest.fixture
def ks(home: Path, pycache: str) -> Ks:
    """Run the installed ``keysafe`` script: ks("get", "x", "--org", "a", input="...")."""

    def run(*args: str, input: str | bytes | None = None,
            env: dict[str, str] | None = None) -> Run:
        full_env = dict(os.environ)
        full_env.pop("PYTHONDONTWRITEBYTECODE", None)
        full_env["PYTHONPYCACHEPREFIX"] = pycache
        full_env.update(env or {})
        data = input.encode() if isinstance(input, str) else input
        p = subprocess.run([KEYSAFE, *args], input=data if data is not None else b"",
                           capture_output=True, env=full_env, timeout=120)
        return Run(p.returncode, p.stdout.decode(), p.stderr.decode())

    return run


@pytest.fixture
def typer_path(home: Path, pycache: str) -> Ks:
    """The typer app run in a subprocess, bypassing entry.main's fast path."""

    def run(*args: str, input: str | None = None) -> Run:
        code = "import sys; from keysafe.cli.app import run; sys.exit(run(sys.argv[1:]))"
        env = dict(os.environ, PYTHONPYCACHEPREFIX=pycache)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        p = subprocess.run([sys.executable, "-c", code, *args], env=env,
                           input=(input or "").encode(), capture_output=True, timeout=120)
        return Run(p.returncode, p.stdout.decode(), p.stderr.decode())

    return run


Cli = Callable[..., Result]


@pytest.fixture
def cli(home: Path) -> Cli:
    """The typer app in process (CliRunner): cli("put", "x", "--org", "a", input="v")."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=input)

    return invoke


@pytest.fixture
def kc(cli: Cli) -> Ks:
    """Like ``ks`` but in process (CliRunner): the same app, much faster to start."""

    def run(*args: str, input: str | None = None) -> Run:
        r = cli(*args, input=input)
        return Run(r.exit_code, r.stdout, r.stderr)

    return run


@pytest.fixture
def put(kc: Ks) -> Callable[..., Run]:
    """Store a value through the CLI (stdin) and insist it worked."""

    def do(name: str, value: str, *extra: str, org: str = "acme") -> Run:
        r = kc("put", name, "--org", org, *extra, input=value)
        assert r.code == 0, r.err
        return r

    return do
