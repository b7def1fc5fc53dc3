"""The `get` fast path in entry.main behaves exactly like the typer command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from keysafe.cli.reading import parse_get

CASES = [
    ["get", "k", "--org", "acme"],
    ["get", "k", "--org=acme"],
    ["get", "--org", "acme", "k"],
    ["get", "keysafe/local/acme/shared/k"],
    ["get", "k", "--org", "acme", "--json"],
    ["get", "k", "--org", "acme", "--version", "1"],
    ["get", "k", "--org", "acme", "--version=1", "--json"],
    ["get", "creds", "--org", "acme", "--field", "token"],
    ["get", "creds", "--org", "acme", "--field", "port"],
    ["get", "creds", "--org", "acme", "--field", "nope", "--json"],
    ["get", "k", "--org", "acme", "--domain", "shared"],
    ["get", "k", "--org", "acme", "--env", "local"],
    ["get", "missing", "--org", "acme"],
    ["get", "missing", "--org", "acme", "--json"],
    ["get", "k", "--org", "acme", "--version", "9"],
    ["get", "k"],
    ["get", "bad name", "--org", "acme"],
    ["get", "k", "--org", "acme", "--field", "x"],
]


@pytest.fixture
def filled(put, kc):
    put("k", "v1")
    put("k", "v2")
    assert kc("put", "creds", "--org", "acme", "--credentials",
              input='{"token": "t0k", "port": 5432}').code == 0


@pytest.mark.parametrize("args", CASES, ids=[" ".join(c[1:]) for c in CASES])
def test_fast_path_matches_typer(filled, ks, typer_path, args):
    assert parse_get(args[1:]) is not None  # really the fast path
    fast = ks(*args)
    slow = typer_path(*args)
    assert (fast.code, fast.out, fast.err) == (slow.code, slow.out, slow.err)


@pytest.mark.parametrize("args", [["k", "--org", "ac/me"], ["k", "--org", "acme",
                                   "--domain", ""], ["k", "--org", "acme", "--env", ".."],
                                   ["k", "--org", "acme", "--version", "2147483648"]])
def test_a_bad_option_value_goes_to_typer_which_names_the_option(args):
    assert parse_get(args) is None


def test_expected_outputs(filled, ks):
    assert ks("get", "k", "--org", "acme").out == "v2"
    assert ks("get", "k", "--org", "acme", "--version", "1").out == "v1"
    assert ks("get", "creds", "--org", "acme", "--field", "port").out == "5432"
    j = ks("get", "k", "--org", "acme", "--json")
    assert json.loads(j.out) == {"path": "keysafe/local/acme/shared/k", "version": 2,
                                 "value": "v2"}
    assert ks("get", "missing", "--org", "acme").code == 3
    assert ks("get", "k").code == 2


def test_fast_path_imports_neither_typer_nor_rich(filled):
    """Nor dataclasses (and the inspect it imports): the records on this path are
    NamedTuples, because the dataclasses machinery cost a quarter of the process."""
    code = (
        "import sys\n"
        "from keysafe.cli.entry import main\n"
        "rc = main(['get', 'k', '--org', 'acme'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'rich', 'click',"
        " 'pydantic', 'dataclasses', 'inspect', 'asyncio'})\n"
        "print(); print(rc, heavy)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert p.stdout.splitlines()[-1] == "0 []", p.stderr


@pytest.mark.parametrize("args", [
    ["--help"], ["-h"], [], ["--org", "acme"], ["k", "--bogus"], ["k", "extra", "--org", "a"],
    ["k", "--org"], ["k", "--org", "a", "--org", "b"], ["k", "--version", "0"],
    ["k", "--version", "one"], ["k", "--json", "--json"], ["k", "--org", "--json"],
    ["k", "--", "x"], ["k", "--org="],
])
def test_anything_unusual_goes_to_typer(args):
    assert parse_get(args) is None


def test_parse_get_values():
    assert parse_get(["k", "--org", "a", "--domain=d", "--env", "e", "--version", "3",
                      "--field", "f", "--json"]) == {
        "name": "k", "org": "a", "domain": "d", "env": "e", "version": 3, "field": "f",
        "as_json": True}
    assert parse_get(["keysafe/local/a/shared/k"]) == {"name": "keysafe/local/a/shared/k",
                                                        "as_json": False}


def test_typer_fallback_from_entry(ks):
    r = ks("get", "--help")
    assert r.code == 0
    assert "--field" in r.out
    bad = ks("get", "k", "--org", "acme", "--version", "0")
    assert bad.code == 2
