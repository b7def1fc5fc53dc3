"""Helpers for the master-key-wrapped-by-a-KMS tests: the real ``keysafe`` script in a
fresh process (one unwrap each, as in production), a clean KEYSAFE_HOME, and the
canary search for the plaintext master keys."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEYSAFE = str(Path(sys.executable).parent / "keysafe")


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """``keysafe`` subprocesses with KEYSAFE_HOME and the KMS settings of one test."""

    def __init__(self, home: Path, **env: str) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("KEYSAFE_") and k != "ENVIRONMENT"}
        self.env.update(KEYSAFE_HOME=str(home), KEYSAFE_ACTOR="tester", **env)
        self.work = home.parent / "work"
        self.work.mkdir(parents=True, exist_ok=True)  # no stray keysafe.toml

    @property
    def key_file(self) -> Path:
        return self.home / "master.key"

    def __call__(self, *args: str, input: str = "", **env: str | None) -> Run:
        full = dict(self.env)
        for k, v in env.items():
            if v is None:
                full.pop(k, None)
            else:
                full[k] = v
        p = subprocess.run([KEYSAFE, *args], input=input.encode(), capture_output=True,
                           env=full, cwd=self.work, timeout=120)
        return Run(p.returncode, p.stdout.decode(), p.stderr.decode())

    def put(self, name: str, value: str, **env: str | None) -> None:
        r = self("put", name, "--org", "acme", input=value, **env)
        assert r.code == 0, r.err

    def get(self, name: str, **env: str | None) -> Run:
        return self("get", name, "--org", "acme", **env)


def key_forms(ring: dict[str, Any]) -> list[bytes]:
    """Every way a plaintext ring's keys could leak: raw, base64, hex, urlsafe base64."""
    forms: list[bytes] = []
    for b64 in ring["keys"].values():
        raw = base64.b64decode(b64)
        forms += [raw, b64.encode(), raw.hex().encode(), base64.urlsafe_b64encode(raw)]
    return forms


def assert_no_key(ring: dict[str, Any], *blobs: bytes | str) -> None:
    """The canary search: no form of any key in any of ``blobs``."""
    for blob in blobs:
        data = blob.encode() if isinstance(blob, str) else blob
        for form in key_forms(ring):
            assert form not in data, "a plaintext master key leaked"


def wrapped_doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    assert doc["format"] == "keysafe-wrapped-master-key-ring"
    assert doc["version"] == 1
    assert set(doc) == {"format", "version", "kms", "ciphertext"}
    return doc
