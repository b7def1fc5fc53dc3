"""``keysafe serve`` as a command: ``--json`` prints where it listens and the first
admin token as one line for scripts; a second server on a port one already serves stops
with a config error (granian opens its port shared, SO_REUSEPORT: without the check the
second server would start silently and the kernel would split requests between two
stores)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from keysafe.errors import ConfigError
from keysafe.server.run import ensure_port_free

from .serverkit import PYTHON, RealServer, free_port


def test_a_port_someone_listens_on_shared_is_refused() -> None:
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use"):
            ensure_port_free("127.0.0.1", port)
    ensure_port_free("127.0.0.1", port)  # closed: free again
    ensure_port_free("127.0.0.1", 0)
    with pytest.raises(ConfigError, match=r"cannot listen on 'no-such-host\.invalid'"):
        ensure_port_free("no-such-host.invalid", free_port())


def test_a_second_server_on_the_same_port_stops_before_making_a_token(tmp_path: Path) -> None:
    first = RealServer(tmp_path / "one")
    first.start()
    try:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("KEYSAFE_") and k != "ENVIRONMENT"}
        env["KEYSAFE_HOME"] = str(tmp_path / "two")
        r = subprocess.run([PYTHON, "-m", "keysafe", "serve", "--port", str(first.port)],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 8, r.stderr
        assert f"port {first.port} on 127.0.0.1 is already in use" in r.stderr
        assert "first admin token" not in r.stdout
        assert not list((tmp_path / "two").glob("server*.db"))
        h = {"authorization": f"Bearer {first.token}"}
        for _ in range(10):  # every request still reaches the one server
            assert httpx.get(f"{first.url}/api/whoami", headers=h, timeout=5).status_code == 200
    finally:
        first.stop()


@pytest.mark.parametrize("where", ["local", "staging"])
def test_serve_json_prints_one_line_a_script_can_use(tmp_path: Path, where: str) -> None:
    """The first admin token works on the server that printed it, with `serve --env`
    too (the workers serve the environment asked for, where the token was made)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KEYSAFE_") and k != "ENVIRONMENT"}
    env.update(KEYSAFE_HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    args = []
    if where != "local":
        env["KEYSAFE_MASTER_KEY"] = base64.b64encode(bytes(range(32))).decode()
        args = ["--env", where]
    port = free_port()
    proc = subprocess.Popen([PYTHON, "-m", "keysafe", "serve", "--port", str(port),
                             "--json", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        info = json.loads(line)
        url = f"http://127.0.0.1:{port}"
        assert {k: info[k] for k in ("url", "docs", "health", "panel", "env", "backend")} == {
            "url": url, "docs": f"{url}/docs", "health": f"{url}/healthz",
            "panel": f"{url}/ui", "env": where, "backend": "sqlite"}
        token = info["first_admin_token"]
        assert token.startswith("ks_")
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"{url}/api/whoami",
                              headers={"authorization": f"Bearer {token}"}, timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "keysafe serve did not answer"
                time.sleep(0.1)
        assert r.status_code == 200
        catalog = httpx.get(f"{url}/api/catalog",
                            headers={"authorization": f"Bearer {token}"}, timeout=5)
        assert catalog.json()["environment"] == where
    finally:
        proc.terminate()
        proc.wait(timeout=10)
