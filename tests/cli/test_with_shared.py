"""``run`` and ``export`` with ``--with-shared``: a domain's secrets over the org's shared
ones (spec 001: a domain's key, else the org's shared key), a name both hold being the
domain's. Without the flag a domain scope is that domain alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

Ks = Callable[..., Any]
SHARED_OPENAI = "sk-" + "s1" * 16
CARDS_OPENAI = "sk-" + "c2" * 16


def child_env(r: Any) -> dict[str, str]:
    assert r.code == 0, r.err
    return dict(item.split("=", 1) for item in r.out.split("\0") if "=" in item)


@pytest.fixture
def layered(put: Callable[..., Any]) -> None:
    put("openai_api_key", SHARED_OPENAI)
    put("github_token", "ghp_" + "g" * 36)
    put("openai_api_key", CARDS_OPENAI, "--domain", "cards")
    put("card_key", "card-value", "--domain", "cards")
    put("other_key", "elsewhere", "--domain", "billing")


def test_run_layers_the_shared_domain_beneath(ks: Ks, layered: None) -> None:
    got = child_env(ks("run", "--org", "acme", "--domain", "cards", "--with-shared", "--",
                       "env", "-0"))
    assert got["OPENAI_API_KEY"] == CARDS_OPENAI  # the domain's own wins
    assert got["GITHUB_TOKEN"] == "ghp_" + "g" * 36  # the org's shared one
    assert got["CARD_KEY"] == "card-value"
    assert "OTHER_KEY" not in got
    alone = child_env(ks("run", "--org", "acme", "--domain", "cards", "--", "env", "-0"))
    assert "GITHUB_TOKEN" not in alone


def test_only_finds_each_name_in_its_layer(ks: Ks, layered: None) -> None:
    got = child_env(ks("run", "--org", "acme", "--domain", "cards", "--with-shared",
                       "--only", "github_token,openai_api_key", "--", "env", "-0"))
    assert (got["GITHUB_TOKEN"], got["OPENAI_API_KEY"]) == ("ghp_" + "g" * 36, CARDS_OPENAI)
    r = ks("run", "--org", "acme", "--domain", "cards", "--with-shared", "--only", "nope",
           "--", "true")
    assert r.code == 3
    assert ks("run", "--org", "acme", "--domain", "cards", "--only", "github_token", "--",
              "true").code == 3  # not without the flag


def test_export_and_the_shared_domain_itself(ks: Ks, layered: None) -> None:
    r = ks("export", "--org", "acme", "--domain", "cards", "--with-shared",
           "--format", "json")
    assert r.code == 0, r.err
    assert json.loads(r.out) == {"OPENAI_API_KEY": CARDS_OPENAI, "CARD_KEY": "card-value",
                                 "GITHUB_TOKEN": "ghp_" + "g" * 36}
    # The shared domain with itself beneath: each secret once.
    r = ks("export", "--org", "acme", "--with-shared", "--format", "json")
    assert json.loads(r.out) == {"OPENAI_API_KEY": SHARED_OPENAI,
                                 "GITHUB_TOKEN": "ghp_" + "g" * 36}


def test_refusals(ks: Ks, layered: None) -> None:
    r = ks("export", "--org", "acme", "--domain", "cards", "--with-shared", "--format",
           "external-secret", "--server-url", "https://keysafe.example")
    assert r.code == 2
    assert "--with-shared" in r.err
    r = ks("run", "--with-shared", "--", "true")
    assert r.code == 2
    assert "--with-shared needs --org" in r.err
