"""Fixtures for the AWS backend tests: a real moto server in server mode on loopback
(one per test module), dummy credentials, and plain boto3 clients to check interop.

Import the fixtures into a test module (``from aws_fixtures import aws``); the module
then has its own server, started on first use and stopped after its last test.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto.server")

from moto.server import ThreadedMotoServer

REGION = "us-east-1"
#: What the backends and boto3 read from the environment (set for the module).
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}
#: Variables that would point boto3 somewhere else (a developer's own setup).
CLEAR = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
         "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_SSM", "AWS_CONFIG_FILE",
         "AWS_SHARED_CREDENTIALS_FILE", "LOCALSTACK_ENDPOINT")


@dataclass
class MotoAws:
    """A running moto server and how to reach it."""

    server: ThreadedMotoServer
    url: str

    def client(self, service: str) -> Any:
        """A plain boto3 client, as another team's code would use it."""
        import boto3

        return boto3.client(service, endpoint_url=self.url, region_name=REGION)

    def stop(self) -> None:
        self.server.stop()
        inner = getattr(self.server, "_server", None)
        if inner is not None:  # release the port: later connections are refused
            inner.server_close()


def start_moto() -> MotoAws:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return MotoAws(server, f"http://{host}:{port}")


@pytest.fixture(scope="module")
def aws() -> Iterator[MotoAws]:
    """One moto server for the module, with dummy credentials in the environment."""
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEAR:
            mp.delenv(var, raising=False)
        for var, value in ENV.items():
            mp.setenv(var, value)
        # An empty config file, so no ~/.aws/config setting leaks in.
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        moto = start_moto()
        try:
            yield moto
        finally:
            moto.stop()
